"""The readings hub: what every output reads, and what the poller writes.

For each configured meter it keeps the last value of every measurement, a
bounded one-minute window for averages, the meter's status and counters,
and the serialized Readings JSON (made once per change, not per request).
Outputs subscribe to updates; a subscriber is called in the poller's
greenlet and must not block (streams hand the event to their own queue).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Mapping, Optional, Tuple

from .meters.model import MeterModel
from .readings import dumps, readings

log = logging.getLogger(__name__)

AVAILABLE = "available"
UNAVAILABLE = "unavailable"

WINDOW_SECONDS = 60.0
WINDOW_MAX_SAMPLES = 4096   # bounds memory whatever the poll rate


@dataclass(frozen=True)
class MeterUpdate:
    """Values from one successful read of one meter."""

    device_id: int
    values: Mapping[str, Optional[float]]
    timestamp: float
    complete: bool = False     # True on the read that ends a full cycle of the meter


@dataclass(frozen=True)
class AvailabilityUpdate:
    """A meter turned available or unavailable."""

    device_id: int
    status: str
    timestamp: float


@dataclass(frozen=True)
class StatusUpdate:
    status: Mapping
    timestamp: float


@dataclass(frozen=True)
class MeterConfig:
    device_id: int
    type_name: str         # as configured, upper case: SDM, SDM630, JANITZA, ...
    model: MeterModel
    unique_id: str


@dataclass
class MeterState:
    config: MeterConfig
    status: str = AVAILABLE
    values: Dict[str, Optional[float]] = field(default_factory=dict)
    timestamp: float = 0.0
    last_good: float = 0.0
    requests: int = 0
    complete_readings: int = 0
    errors: Counter = field(default_factory=Counter)
    window: Deque[Tuple[float, Mapping[str, Optional[float]]]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_MAX_SAMPLES))
    _json: Optional[bytes] = None

    @property
    def device_id(self) -> int:
        return self.config.device_id

    def readings(self) -> dict:
        return readings(self.config.unique_id, self.device_id, self.timestamp, self.values)

    def readings_json(self) -> bytes:
        if self._json is None:
            self._json = dumps(self.readings())
        return self._json

    def age(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds since the last good reading, None if there never was one."""
        if not self.last_good:
            return None
        return (now or time.time()) - self.last_good

    def prune(self, now: float) -> None:
        while self.window and self.window[0][0] < now - WINDOW_SECONDS:
            self.window.popleft()

    def minute_average(self, now: Optional[float] = None) -> dict:
        """Per-measurement mean over the last minute; nulls for an empty window."""
        self.prune(now or time.time())
        sums: Dict[str, float] = {}
        counts: Dict[str, int] = {}
        for _, values in self.window:
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
        means = {name: sums[name] / counts[name] for name in sums}
        newest = self.window[-1][0] if self.window else 0.0
        return readings(self.config.unique_id, self.device_id, newest, means)


Subscriber = Callable[[object], None]


class Hub:
    """Meters by Modbus id, their readings, and the subscribers to updates."""

    def __init__(self, configs: List[MeterConfig]):
        self.started = time.time()
        self.meters: Dict[int, MeterState] = {
            cfg.device_id: MeterState(cfg) for cfg in sorted(configs, key=lambda c: c.device_id)}
        self.bus: Dict[str, object] = {"Device": "", "Connected": False, "Reconnects": 0}
        self.sections: Dict[str, Dict[str, object]] = {}   # extra /status sections of outputs (e.g. Mqtt)
        self._subscribers: List[Subscriber] = []
        self._failed: List[Subscriber] = []     # subscribers whose failure was logged once

    # -- written by the poller -------------------------------------------------
    def publish(self, device_id: int, values: Mapping[str, Optional[float]],
                timestamp: Optional[float] = None, complete: bool = False) -> None:
        """Merge a successful read into the meter's last values and tell subscribers."""
        meter = self.meters[device_id]
        now = timestamp or time.time()
        meter.values.update(values)
        meter.timestamp = meter.last_good = now
        meter.window.append((now, dict(values)))
        meter.prune(now)
        meter._json = None
        if complete:
            meter.complete_readings += 1
        self._emit(MeterUpdate(device_id, dict(values), now, complete))

    def set_status(self, device_id: int, status: str) -> None:
        meter = self.meters[device_id]
        if meter.status == status:
            return
        meter.status = status
        meter._json = None
        if status == UNAVAILABLE:
            meter.window.clear()
        log.info("meter %d: %s", device_id, status)
        self._emit(AvailabilityUpdate(device_id, status, time.time()))

    def count(self, device_id: int, error_kind: Optional[str] = None) -> None:
        """One request to a meter, failed with ``error_kind`` or successful (None)."""
        meter = self.meters[device_id]
        meter.requests += 1
        if error_kind:
            meter.errors[error_kind] += 1

    def publish_status(self, status: Mapping) -> None:
        self._emit(StatusUpdate(status, time.time()))

    # -- read by the outputs ---------------------------------------------------
    def available(self) -> List[MeterState]:
        return [m for m in self.meters.values() if m.status == AVAILABLE]

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def _emit(self, event: object) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:   # one broken output must stop neither the poller nor itself for good
                if subscriber not in self._failed:
                    self._failed.append(subscriber)
                    log.exception("subscriber %r failed on %s; it stays subscribed, later failures "
                                  "are not logged", subscriber, type(event).__name__)
