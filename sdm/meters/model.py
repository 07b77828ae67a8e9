"""What a meter model is: a register table plus the few facts the bus needs.

Tables are data: a model file lists (measurement, address) rows and calls
:func:`registers`; nothing here is specific to one meter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Tuple

from ..encoding import F32, Encoding, decode, encode
from ..measurements import CATALOGUE

READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_MULTIPLE = 0x10

# When a written communication setting takes effect.
AT_ONCE = "at once"
AFTER_POWER_CYCLE = "after a power cycle"


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
class Setting:
    """A communication setting kept in holding registers (read FC 03, written FC 16).

    ``codes`` maps the number the meter stores to what it means ("9600",
    "E1"); a setting without codes stores the plain number, valid from ``low``
    to ``high`` (the MODBUS id).  ``writable``: the vendor documents writing
    it over MODBUS; anything else is changed on the meter's front panel.
    """

    key: str                                   # the NAME of ``sdm_config set ID NAME=VALUE``
    label: str
    address: int
    encoding: Encoding = F32
    codes: Tuple[Tuple[int, str], ...] = ()
    low: int = 0
    high: int = 0
    writable: bool = False
    applies: str = AFTER_POWER_CYCLE

    def meaning(self, code: Optional[int]) -> Optional[str]:
        """What a stored number means; None for a number the vendor lists no meaning for."""
        if code is None:
            return None
        if not self.codes:
            return str(code) if self.low <= code <= self.high else None
        return dict(self.codes).get(code)

    def stored(self, words: Sequence[int]) -> Optional[int]:
        """The number the registers hold; None for a value that is no whole number."""
        value = decode(words, self.encoding)
        return int(value) if math.isfinite(value) and float(value).is_integer() else None

    def words(self, code: int) -> Tuple[int, ...]:
        """The registers that store ``code``."""
        return encode(code, self.encoding)

    def code_for(self, meaning: str) -> Optional[int]:
        """The number to store for a meaning ("9600" -> 2); None when the model has no such choice."""
        if not self.codes:
            return int(meaning) if meaning.isdigit() and self.low <= int(meaning) <= self.high else None
        return next((code for code, text in self.codes if text == meaning), None)


@dataclass(frozen=True)
class Identity:
    """A read-only holding register that tells which meter this is (meter code, serial number, firmware)."""

    key: str
    label: str
    address: int
    count: int            # registers
    kind: str             # "hex": one register shown as 0x...; "uint32": a number; "words": raw registers


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
    # Communication settings and identity registers (holding registers), as documented.
    settings: Tuple[Setting, ...] = ()
    identity: Tuple[Identity, ...] = ()
    set_mode: bool = False         # writes are accepted only while the meter is in its set mode
    front_panel: str = ""          # how to change the settings where MODBUS cannot

    def setting(self, key: str) -> Setting:
        for item in self.settings:
            if item.key == key:
                return item
        raise KeyError(key)

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
