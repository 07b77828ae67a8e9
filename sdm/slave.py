"""Answering as a meter: one MODBUS request PDU -> the reply PDU a served unit gives, from the cache.

A served unit is a configured meter under a MODBUS id.  It answers with its
model's own register map: a read is served when every register it asks for
was read from the real meter (by sdm's poller, or heard on a listened bus)
no longer than ``max_age`` seconds ago.  What the gateway cannot vouch for is
refused, never invented:

- a register older than ``max_age`` or never read: exception 0x0B (gateway
  target failed to respond); the RTU slave stays silent instead, as an
  absent meter would;
- a register the model does not have: exception 02; more registers than the
  model (or MODBUS) allows in one request: exception 03;
- a write (FC 05, 06, 15, 16): exception 01 unless writes are forwarded; a
  forwarded write that touches a communication setting (sdm.meters tables)
  is refused all the same, since it would cut the meter off its bus.

This module is pure logic on bytes; sdm/serve.py carries the PDUs over TCP
and RTU in threads of its own.
"""

from __future__ import annotations

import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Tuple

from gevent import monkey

from .cache import RegisterCache
from .config import FORWARD, MeterConfig
from .forward import GATEWAY_TARGET_FAILED, ForwardedWrite
from .framing.rtu import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    MAX_READ_REGISTERS,
    MAX_WRITE_REGISTERS,
)
from .meters.eastron import METER_CODE_ADDRESS
from .meters.model import READ_HOLDING, MeterModel

NativeLock = monkey.get_original("threading", "Lock")

READS = (0x03, 0x04)
WRITE_SINGLE, WRITE_MULTIPLE = 0x06, 0x10
COIL_WRITES = (0x05, 0x0F)
GATEWAY_PATH_UNAVAILABLE = 0x0A

# Refusal reasons, as /status and /metrics count them.
REASONS = ("stale", "never_read", "address", "count", "function", "write_denied", "setting",
           "write_failed", "unit", "malformed")


class Refusal(Exception):
    """A request the unit does not answer with data: ``code`` is its MODBUS exception code."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"exception {code} ({reason})")
        self.code = code
        self.reason = reason


def known_addresses(model: MeterModel) -> Dict[int, FrozenSet[int]]:
    """Per function code, every register address the model has: its measurements, the range a
    real meter answers, its identity and setting registers."""
    known: Dict[int, set] = {}
    for reg in model.registers:
        known.setdefault(reg.fc, set()).update(range(reg.address, reg.end))
    for fc, start, end in model.address_space:
        known.setdefault(fc, set()).update(range(start, end))
    for item in model.identity:
        known.setdefault(READ_HOLDING, set()).update(range(item.address, item.address + item.count))
    for setting in model.settings:
        known.setdefault(READ_HOLDING, set()).update(range(setting.address, setting.address + setting.encoding.width))
    return {fc: frozenset(addresses) for fc, addresses in known.items()}


def fixed_registers(model: MeterModel) -> Dict[Tuple[int, int], int]:
    """Registers whose value the model itself fixes: the meter code where the model has one."""
    return {} if model.meter_code is None else {(READ_HOLDING, METER_CODE_ADDRESS): model.meter_code}


def setting_addresses(model: MeterModel) -> FrozenSet[int]:
    return frozenset(a for s in model.settings for a in range(s.address, s.address + s.encoding.width))


@dataclass(frozen=True)
class Unit:
    """A served id: the configured meter, its model's facts, precomputed for the answer path."""

    meter: MeterConfig
    known: Mapping[int, FrozenSet[int]]
    fixed: Mapping[Tuple[int, int], int]
    settings: FrozenSet[int]

    @classmethod
    def of(cls, meter: MeterConfig) -> Unit:
        model = meter.model
        return cls(meter, known_addresses(model), fixed_registers(model), setting_addresses(model))

    @property
    def max_read(self) -> int:
        return min(self.meter.model.max_registers, MAX_READ_REGISTERS)


class ServeStats:
    """Served requests, refusals by reason and the served values' age, of one server.

    Written by its server thread, read by /status and /metrics on the loop's
    thread; a tiny lock keeps the few counters consistent.
    """

    def __init__(self, where: str):
        self.where = where
        self.requests = 0
        self.answered = 0
        self.refused: Counter = Counter()
        self.age_sum = 0.0
        self.age_max = 0.0
        self.connections = 0            # TCP clients connected now
        self._lock = NativeLock()

    def answer(self, age: Optional[float]) -> None:
        with self._lock:
            self.requests += 1
            self.answered += 1
            if age is not None:
                self.age_sum += age
                self.age_max = max(self.age_max, age)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.requests += 1
            self.refused[reason] += 1

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Take the counters of a :meth:`snapshot`: a helper process's, or a restarted one's own."""
        with self._lock:
            self.requests = snapshot["Requests"]
            self.answered = snapshot["Answered"]
            self.refused = Counter({k: v for k, v in snapshot["RefusedByReason"].items() if v})
            mean = snapshot["MeanAgeSeconds"]
            self.age_sum = mean * self.answered if mean is not None else 0.0
            self.age_max = snapshot["MaxAgeSeconds"]

    def snapshot(self) -> Dict[str, object]:
        with self._lock:
            return {
                "Where": self.where,
                "Requests": self.requests,
                "Answered": self.answered,
                "Refused": sum(self.refused.values()),
                "RefusedByReason": {reason: self.refused.get(reason, 0) for reason in REASONS},
                "MeanAgeSeconds": self.age_sum / self.answered if self.answered else None,
                "MaxAgeSeconds": self.age_max,
                "Connections": self.connections,
            }


Forward = Callable[[MeterConfig, ForwardedWrite], int]   # hands a write to the meter's bus, returns its outcome


class Responder:
    """The units of one ``[[serve]]`` and the rules they answer by."""

    def __init__(self, units: Mapping[int, MeterConfig], cache: RegisterCache, max_age: float,
                 writes: str, stats: ServeStats, forward: Optional[Forward] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.units = {unit_id: Unit.of(meter) for unit_id, meter in units.items()}
        self.cache = cache
        self.max_age = max_age
        self.forward = forward if writes == FORWARD else None
        self.stats = stats
        self.clock = clock

    def serves(self, unit_id: int) -> bool:
        return unit_id in self.units

    def waits(self, pdu: bytes) -> bool:
        """Whether answering ``pdu`` waits for the bus (a write to be forwarded)."""
        return self.forward is not None and pdu[:1] in (bytes((WRITE_SINGLE,)), bytes((WRITE_MULTIPLE,)))

    def respond(self, unit_id: int, pdu: bytes, client: str) -> bytes:
        """The reply PDU; Refusal for anything answered with an exception (or silence on RTU).
        Counts every request in the stats."""
        try:
            reply, age = self._reply(unit_id, pdu, client)
        except Refusal as refusal:
            self.stats.refuse(refusal.reason)
            raise
        self.stats.answer(age)
        return reply

    def _reply(self, unit_id: int, pdu: bytes, client: str) -> Tuple[bytes, Optional[float]]:
        unit = self.units.get(unit_id)
        if unit is None:
            raise Refusal(GATEWAY_PATH_UNAVAILABLE, "unit")
        if not pdu:
            raise Refusal(ILLEGAL_FUNCTION, "malformed")
        fc = pdu[0]
        if fc in READS:
            return self._read(unit, fc, pdu)
        if fc in (WRITE_SINGLE, WRITE_MULTIPLE) or fc in COIL_WRITES:
            return self._write(unit, fc, pdu, client), None
        raise Refusal(ILLEGAL_FUNCTION, "function")

    def _read(self, unit: Unit, fc: int, pdu: bytes) -> Tuple[bytes, Optional[float]]:
        if len(pdu) != 5:
            raise Refusal(ILLEGAL_DATA_VALUE, "malformed")
        start, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= unit.max_read:
            raise Refusal(ILLEGAL_DATA_VALUE, "count")
        fixed = [unit.fixed.get((fc, address)) for address in range(start, start + count)]
        if all(value is not None for value in fixed):
            return _read_reply(fc, fixed), None
        known = unit.known.get(fc, frozenset())
        if any(address not in known for address in range(start, start + count)):
            raise Refusal(ILLEGAL_DATA_ADDRESS, "address")
        cached = self.cache.read(unit.meter.bus, unit.meter.device_id, fc, start, count)
        if cached is None:
            raise Refusal(GATEWAY_TARGET_FAILED, "never_read")
        age = self.clock() - cached.read_at
        if age > self.max_age:
            raise Refusal(GATEWAY_TARGET_FAILED, "stale")
        return _read_reply(fc, cached.words), age

    def _write(self, unit: Unit, fc: int, pdu: bytes, client: str) -> bytes:
        if self.forward is None:
            raise Refusal(ILLEGAL_FUNCTION, "write_denied")
        if fc in COIL_WRITES:
            raise Refusal(ILLEGAL_FUNCTION, "function")     # meters in sdm's tables have no coils
        start, words = _write_words(fc, pdu)
        if any(address in unit.settings for address in range(start, start + len(words))):
            raise Refusal(ILLEGAL_FUNCTION, "setting")
        code = self.forward(unit.meter, ForwardedWrite(unit.meter.device_id, start, words, client))
        if code:
            raise Refusal(code, "write_failed")
        # FC 06 is sent to the meter as a one-register FC 16 (sdm's RTU writes are FC 16, which every
        # Eastron document asks for); the client gets the FC 06 echo it expects.
        return pdu if fc == WRITE_SINGLE else pdu[:5]


def _read_reply(fc: int, words) -> bytes:
    return struct.pack(f">BB{len(words)}H", fc, 2 * len(words), *words)


def _write_words(fc: int, pdu: bytes) -> Tuple[int, list]:
    """Start address and words of an FC 06 or FC 16 request; Refusal(03) for a malformed one."""
    if fc == WRITE_SINGLE:
        if len(pdu) != 5:
            raise Refusal(ILLEGAL_DATA_VALUE, "malformed")
        start, value = struct.unpack(">HH", pdu[1:5])
        return start, [value]
    if len(pdu) < 6:
        raise Refusal(ILLEGAL_DATA_VALUE, "malformed")
    start, count, size = struct.unpack(">HHB", pdu[1:6])
    if not 1 <= count <= MAX_WRITE_REGISTERS or size != 2 * count or len(pdu) != 6 + size:
        raise Refusal(ILLEGAL_DATA_VALUE, "malformed")
    return start, list(struct.unpack(f">{count}H", pdu[6:]))


def exception_pdu(fc: int, code: int) -> bytes:
    return bytes((fc | 0x80, code))
