"""Bus scan: which meter answers at which id (MODBUS/RTU has no discovery).

Per id the first request reads the Eastron meter code (holding register
0xFC02).  Every meter family in the registry reads holding registers, so a
present device answers it, with the code or with an exception; an id that
stays silent is taken as empty after one short wait, derived from the baud
rate and the meter's turnaround.  An id that answers is then probed with each
family's probe register (L1 voltage) and accepted only when the voltage is
plausible.  A family's model is named only when proven (a known meter code);
otherwise the report names the family, never a guessed model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .encoding import Encoding, decode
from .framing import rtu
from .measurements import describe
from .meters.eastron import METER_CODE_ADDRESS
from .meters.model import READ_HOLDING, MeterModel, Register
from .meters.registry import ALIASES, MAX_SLAVE_ID, MODELS, parse_slave_id
from .transport import Link

NOMINAL_VOLTAGES = (110.0, 230.0)
VOLTAGE_TOLERANCE = 0.10
DEFAULT_TURNAROUND = 0.040       # s a meter may take to begin its reply during a scan


@dataclass(frozen=True)
class Family:
    """Models that share one probe register; told apart only by their meter code."""

    models: Tuple[MeterModel, ...]

    @property
    def probe(self) -> Register:
        first = self.models[0]
        return first.register(first.probe)

    @property
    def keyword(self) -> str:
        """The -d type that reads any model of the family."""
        if len(self.models) == 1:
            return self.models[0].key
        keys = {model.key for model in self.models}
        return next(alias for alias, target in ALIASES.items() if target in keys)

    def by_code(self, code: Optional[int]) -> Optional[MeterModel]:
        return next((m for m in self.models if code is not None and m.meter_code == code), None)


def families(models: Iterable[MeterModel] = MODELS.values()) -> List[Family]:
    """Registry models grouped by probe register, in registry order."""
    groups: Dict[Tuple[int, int, Encoding], List[MeterModel]] = {}
    for model in models:
        reg = model.register(model.probe)
        groups.setdefault((reg.fc, reg.address, reg.encoding), []).append(model)
    return [Family(tuple(group)) for group in groups.values()]


@dataclass(frozen=True)
class Found:
    """A meter at one id: a proven model, or only its family."""

    slave: int
    keyword: str              # the TYPE for -d TYPE:ID
    name: str                 # what a person reads: "Eastron SDM630", "Eastron (model not identified)"
    probe: str                # measurement read as proof
    value: float
    meter_code: Optional[int] = None
    proven: bool = True       # False: the family is known, the model is not

    def describe(self) -> str:
        text = self.name
        if self.meter_code is not None:
            text += f" (meter code 0x{self.meter_code:04X})"
        text += f", {describe(self.probe).description}: {self.value:.2f}"
        if not self.proven:
            text += f"; read it as type {self.keyword}"
        return text


@dataclass(frozen=True)
class Outcome:
    """What one id gave: a meter, silence, or an answer that is no known meter."""

    slave: int
    found: Optional[Found] = None
    answered: bool = False
    detail: str = "no answer"

    def describe(self) -> str:
        if self.found:
            return self.found.describe()
        if self.answered:
            return f"answers, but as no known meter ({self.detail})"
        return self.detail


def plausible_voltage(value: float) -> bool:
    """Within 10 % of a nominal mains voltage (110 V or 230 V)."""
    return math.isfinite(value) and any(abs(value - v) <= v * VOLTAGE_TOLERANCE for v in NOMINAL_VOLTAGES)


def parse_ids(text: str) -> List[int]:
    """``1-247`` or ``1,5,20-30``: sorted unique slave ids; ValueError with a readable message."""
    ids: Set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, sep, high = part.partition("-")
        first = parse_slave_id(low)
        last = parse_slave_id(high) if sep else first
        if last < first:
            raise ValueError(f"id range {part!r} runs backwards")
        ids.update(range(first, last + 1))
    if not ids:
        raise ValueError(f"no ids in {text!r} (use e.g. 1-{MAX_SLAVE_ID} or 1,5,26)")
    return sorted(ids)


class Scanner:
    """Probes ids on one link.  ``turnaround``: how long a meter may take to begin a reply."""

    def __init__(self, link: Link, turnaround: float = DEFAULT_TURNAROUND):
        self.link = link
        self.turnaround = turnaround
        self.families = families()
        # a device that answered needs its quiet time before the next request
        self.pause = max(model.pause for family in self.families for model in family.models)

    def read(self, slave: int, fc: int, address: int, count: int) -> List[int]:
        return self.link.exchange(slave, fc, address, count, self.turnaround, prompt=True)

    def scan_id(self, slave: int) -> Outcome:
        code: Optional[int] = None
        try:
            code = self.read(slave, READ_HOLDING, METER_CODE_ADDRESS, 1)[0]
        except rtu.NoReply:
            return Outcome(slave)
        except rtu.ModbusError:
            pass   # an exception reply (no such register) still shows a device is there
        detail = ""
        for family in self.families:
            self._pause()
            try:
                found = self._try_family(slave, family, code)
            except rtu.ModbusError as err:
                detail = str(err)
                continue
            if found:
                return Outcome(slave, found, answered=True)
            detail = "implausible probe value"
        return Outcome(slave, answered=True, detail=detail)

    def scan(self, ids: Iterable[int], report: Callable[[Outcome], None] = lambda outcome: None) -> List[Found]:
        """Scan ``ids`` in order, calling ``report`` after each; the meters found."""
        found = []
        for slave in ids:
            outcome = self.scan_id(slave)
            report(outcome)
            if outcome.found:
                found.append(outcome.found)
        return found

    def _try_family(self, slave: int, family: Family, code: Optional[int]) -> Optional[Found]:
        probe = family.probe
        value = decode(self.read(slave, probe.fc, probe.address, probe.width), probe.encoding)
        model = family.by_code(code)
        if model is None and not plausible_voltage(value):
            return None
        if model is not None:
            return Found(slave, model.key, f"{model.manufacturer} {model.model}", probe.name, value, code)
        only = family.models[0] if len(family.models) == 1 else None
        if only is not None:
            return Found(slave, only.key, f"{only.manufacturer} {only.model}", probe.name, value)
        return Found(slave, family.keyword, f"{family.models[0].manufacturer} (model not identified)",
                     probe.name, value, code, proven=False)

    def _pause(self) -> None:
        """Let the device that just answered (or not) fall quiet before the next request."""
        self.link.transport.settle(quiet=self.pause, limit=self.pause + self.turnaround)


def device_list(found: Sequence[Found]) -> str:
    """The ``-d`` argument for the meters found: ``sdm630:1,janitza:26``."""
    return ",".join(f"{meter.keyword}:{meter.slave}" for meter in found)
