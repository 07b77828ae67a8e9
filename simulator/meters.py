"""A virtual meter: the register image of one model, filled from its physics.

It uses the gateway's own register tables, which is why tests also check
request bytes written out by hand from the reference (golden frames).
"""

from __future__ import annotations

from typing import List

from sdm.encoding import encode
from sdm.framing.rtu import ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE, ILLEGAL_FUNCTION, MAX_READ_REGISTERS
from sdm.meters.eastron import METER_CODE_ADDRESS
from sdm.meters.model import READ_HOLDING, MeterModel

from .physics import Physics


class MeterException(Exception):
    """The meter answers with a MODBUS exception code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class VirtualMeter:
    def __init__(self, model: MeterModel, slave: int, physics: Physics, answer_meter_code: bool = True):
        self.model = model
        self.slave = slave
        self.physics = physics
        self.answer_meter_code = answer_meter_code and model.meter_code is not None

    def read(self, fc: int, start: int, count: int) -> List[int]:
        """Registers [start, start + count) of function code fc, or MeterException."""
        if fc == READ_HOLDING and start == METER_CODE_ADDRESS and count == 1 and self.answer_meter_code:
            return [self.model.meter_code]
        if fc not in {space[0] for space in self.model.address_space}:
            raise MeterException(ILLEGAL_FUNCTION)
        if not 1 <= count <= min(self.model.max_registers, MAX_READ_REGISTERS):
            raise MeterException(ILLEGAL_DATA_VALUE)
        end = start + count
        if not any(f == fc and lo <= start and end <= hi for f, lo, hi in self.model.address_space):
            raise MeterException(ILLEGAL_DATA_ADDRESS)
        return self._image(fc, start, end)

    def _image(self, fc: int, start: int, end: int) -> List[int]:
        values = self.physics.sample()
        words = [0] * (end - start)
        for reg in self.model.registers:
            if reg.fc != fc or reg.end <= start or reg.address >= end:
                continue
            value = values[reg.name]
            for i, word in enumerate(encode(value, reg.encoding)):
                if start <= reg.address + i < end:
                    words[reg.address + i - start] = word
        return words
