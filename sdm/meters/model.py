"""What a meter model is: a register table plus the few facts the bus needs.

Tables are data: a model file lists (measurement, address) rows and calls
:func:`registers`; nothing here is specific to one meter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Tuple

from ..encoding import F32, Encoding
from ..measurements import CATALOGUE

READ_HOLDING = 0x03
READ_INPUT = 0x04


@dataclass(frozen=True)
class Register:
    """One measurement on the wire: function code, 0-based PDU address, encoding."""

    name: str
    fc: int
    address: int
    encoding: Encoding = F32

    @property
    def width(self) -> int:
        return self.encoding.width

    @property
    def end(self) -> int:
        return self.address + self.width


@dataclass(frozen=True)
class MeterModel:
    """A meter type as the gateway and the simulator see it."""

    key: str                      # the -d keyword, lower case
    manufacturer: str
    model: str                    # human readable model name
    registers: Tuple[Register, ...]
    max_registers: int            # most registers one request may ask for
    pause: float                  # seconds of silence the meter needs before its next request
    probe: str                    # measurement read to (re)detect the meter: L1 voltage
    phases: int = 3
    # The rating, for telling true readings from impossible ones (sdm.sanity): the most current
    # one phase carries (the datasheet's Imax, A) and the nominal phase-to-neutral voltage (V).
    # Each table cites its source; where it is unsure it says so and errs on the high side.
    max_current: float = 100.0
    nominal_voltage: float = 230.0
    meter_code: Optional[int] = None   # Eastron holding register 0xFC02, where documented
    # Ranges (fc, start, end) a real meter answers; zeros where it has no value.
    # Only the simulator uses this: the gateway never reads outside its table.
    address_space: Tuple[Tuple[int, int, int], ...] = field(default=())

    def register(self, name: str) -> Register:
        for reg in self.registers:
            if reg.name == name:
                return reg
        raise KeyError(name)

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(reg.name for reg in self.registers)


def registers(fc: int, rows: Iterable[Tuple[str, int]], encoding: Encoding = F32) -> Tuple[Register, ...]:
    """Rows of (measurement, address) with one function code and encoding."""
    table = tuple(Register(name, fc, address, encoding) for name, address in rows)
    for reg in table:
        if reg.name not in CATALOGUE:
            raise ValueError(f"register table names unknown measurement {reg.name!r}")
    return table


def check_model(model: MeterModel) -> MeterModel:
    """Refuse a table that overlaps itself or names a measurement twice."""
    seen = set()
    spans: Sequence[Register] = sorted(model.registers, key=lambda r: (r.fc, r.address))
    for before, after in zip(spans, spans[1:]):
        if before.fc == after.fc and after.address < before.end:
            raise ValueError(f"{model.key}: {before.name} and {after.name} overlap")
    for reg in model.registers:
        if reg.name in seen:
            raise ValueError(f"{model.key}: {reg.name} listed twice")
        seen.add(reg.name)
    if model.probe not in seen:
        raise ValueError(f"{model.key}: probe {model.probe} is not in the table")
    if not (model.max_current > 0 and model.nominal_voltage > 0 and model.phases in (1, 3)):
        raise ValueError(f"{model.key}: rating needs a positive current and voltage and 1 or 3 phases")
    return model
