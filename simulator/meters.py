"""A virtual meter: the register image of one model, filled from its physics.

It uses the gateway's own register tables, which is why tests also check
request bytes written out by hand from the reference (golden frames).

Models with communication settings in their table (Eastron) hold them in
holding registers, take FC 16 writes with the vendor's rules and apply a
new id or line setting the way the table says: at once, or only when the
meter is power-cycled (:meth:`VirtualMeter.power_cycle`).  A meter whose line
setting is known hears only requests sent at its baud rate; a pty carries no
parity (Linux clears PARENB on ptys), so parity is stored and reported but
never heard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from sdm.encoding import encode
from sdm.framing.rtu import ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE, ILLEGAL_FUNCTION, MAX_READ_REGISTERS
from sdm.meters.eastron import METER_CODE_ADDRESS
from sdm.meters.model import AT_ONCE, READ_HOLDING, MeterModel, Setting

from .physics import Physics


class MeterException(Exception):
    """The meter answers with a MODBUS exception code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


# How a meter outside its set mode turns a settings write away.  No source says which exception
# a real SDM120 answers (or whether it answers at all): 01 is our assumption.
SET_MODE_REFUSAL = ILLEGAL_FUNCTION

SERIAL_BASE = 26000000    # made-up serial numbers: this plus the meter's first id
FIRMWARE_WORDS = (0x0001, 0x0203)


@dataclass(frozen=True)
class LineSetting:
    """A meter's own line setting, as its registers store it: baud rate and parity code ("N1", "E1", ...)."""

    baud: int
    parity: str

    @property
    def char_time(self) -> float:
        stop_bits = 2 if self.parity == "N2" else 1
        parity_bits = 0 if self.parity.startswith("N") else 1
        return (1 + 8 + parity_bits + stop_bits) / self.baud


# What a meter without a known line setting (no --baud) reports: sdm's default, -c 2.
UNKNOWN_LINE_STORED = LineSetting(9600, "N1")


class VirtualMeter:
    """``line``: the line setting the meter starts at, None to answer at any baud rate (the
    simulator without --baud) until a new setting is applied; ``set_mode``: an SDM120 whose
    button has been held (it takes settings writes)."""

    def __init__(self, model: MeterModel, slave: int, physics: Physics, answer_meter_code: bool = True,
                 line: Optional[LineSetting] = None, set_mode: bool = False):
        self.model = model
        self.slave = slave
        self.physics = physics
        self.answer_meter_code = answer_meter_code and model.meter_code is not None
        self.line = line
        self.set_mode = set_mode
        self.serial = SERIAL_BASE + slave
        self.stored: Dict[str, int] = self._initial_settings(line or UNKNOWN_LINE_STORED)
        self.pending = False          # written settings wait for a power cycle
        self.written_at: Optional[float] = None

    def _initial_settings(self, line: LineSetting) -> Dict[str, int]:
        wanted = {"id": str(self.slave), "baud": str(line.baud), "parity": line.parity}
        stored = {}
        for setting in self.model.settings:
            code = setting.code_for(wanted[setting.key])
            if code is None:
                raise ValueError(f"{self.model.model} has no {setting.label} {wanted[setting.key]}")
            stored[setting.key] = code
        return stored

    def hears(self, baud: Optional[int]) -> bool:
        """Whether a request sent at ``baud`` (None: unknown) reaches this meter as a frame."""
        return self.line is None or baud is None or baud == self.line.baud

    def read(self, fc: int, start: int, count: int) -> List[int]:
        """Registers [start, start + count) of function code fc, or MeterException."""
        code = self.model.meter_code
        if fc == READ_HOLDING and start == METER_CODE_ADDRESS and count == 1 and self.answer_meter_code \
                and code is not None:
            return [code]
        holding = self._holding()
        if fc == READ_HOLDING and holding and not any(f == fc for f, _, _ in self.model.address_space):
            if not all(a in holding for a in range(start, start + count)):
                raise MeterException(ILLEGAL_DATA_ADDRESS)
            return [holding[a] for a in range(start, start + count)]
        if fc not in {space[0] for space in self.model.address_space}:
            raise MeterException(ILLEGAL_FUNCTION)
        if not 1 <= count <= min(self.model.max_registers, MAX_READ_REGISTERS):
            raise MeterException(ILLEGAL_DATA_VALUE)
        end = start + count
        if not any(f == fc and lo <= start and end <= hi for f, lo, hi in self.model.address_space):
            raise MeterException(ILLEGAL_DATA_ADDRESS)
        return self._image(fc, start, end)

    def _holding(self) -> Dict[int, int]:
        """The setting and identity holding registers (not the meter code: see :meth:`read`)."""
        words: Dict[int, int] = {}
        for setting in self.model.settings:
            for i, word in enumerate(setting.words(self.stored[setting.key])):
                words[setting.address + i] = word
        for item in self.model.identity:
            if item.key == "serial":
                words.update({item.address: self.serial >> 16, item.address + 1: self.serial & 0xFFFF})
            elif item.key == "firmware":
                words.update({item.address + i: word for i, word in enumerate(FIRMWARE_WORDS)})
        return words

    def write(self, start: int, words: Sequence[int], now: float) -> None:
        """An FC 16 write: one setting per message, as the Eastron documents ask; MeterException otherwise."""
        setting = self._writable_at(start, len(words))
        if self.model.set_mode and not self.set_mode:
            raise MeterException(SET_MODE_REFUSAL)
        code = setting.stored(words)
        if code is None or setting.meaning(code) is None:
            raise MeterException(ILLEGAL_DATA_VALUE)
        self.stored[setting.key] = code
        self.written_at = now
        if setting.applies == AT_ONCE:
            self._apply()
        else:
            self.pending = True

    def _writable_at(self, start: int, count: int) -> Setting:
        for setting in self.model.settings:
            if setting.writable and setting.address == start and count == setting.encoding.width:
                return setting
        raise MeterException(ILLEGAL_DATA_ADDRESS)

    def power_cycle(self) -> None:
        """Off and on again: stored settings take effect."""
        self.pending = False
        self._apply()

    def _apply(self) -> None:
        if not self.model.settings:
            return
        meaning = {s.key: self._meaning(s) for s in self.model.settings}
        self.slave = int(meaning["id"])
        now_line = LineSetting(int(meaning["baud"]), meaning["parity"])
        if self.line is not None or now_line != UNKNOWN_LINE_STORED:
            self.line = now_line

    def _meaning(self, setting: Setting) -> str:
        """What the stored code of a setting means: every stored code has one (the first ones come from
        code_for, written ones pass write's check), so a missing meaning is a simulator bug."""
        text = setting.meaning(self.stored[setting.key])
        if text is None:
            raise ValueError(f"{self.model.model}: stored {setting.label} {self.stored[setting.key]} means nothing")
        return text

    def _image(self, fc: int, start: int, end: int) -> List[int]:
        wanted = [reg for reg in self.model.registers if reg.fc == fc and reg.end > start and reg.address < end]
        values = self.physics.serve(reg.name for reg in wanted)
        words = [0] * (end - start)
        for reg in wanted:
            value = values[reg.name]
            for i, word in enumerate(encode(value, reg.encoding)):
                if start <= reg.address + i < end:
                    words[reg.address + i - start] = word
        return words


def rekey(meters: Dict[int, VirtualMeter]) -> None:
    """Index the meters by their id again after one changed it (in place: others share the dict)."""
    current = list(meters.values())
    meters.clear()
    meters.update({meter.slave: meter for meter in current})
