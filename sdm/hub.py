"""The readings hub: what every output reads, and what the bus pollers write.

For each configured meter it keeps the last value of every measurement, a
bounded one-minute window for averages, the meter's status and counters,
and the serialized Readings JSON (made once per change, not per request);
for each bus its connection state.  A meter is known by its name (unique in
the gateway); the same MODBUS id may exist on several buses.

The hub lives on the gevent loop's thread.  Pollers run in threads of their
own and reach it through :class:`sdm.bus.LoopSink`, which replays their calls
here in order.  Subscribers are called on this thread and must not block
(streams hand the event to their own queue).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterable, List, Mapping, Optional, Tuple

from .config import MeterConfig
from .readings import dumps, readings

log = logging.getLogger(__name__)

AVAILABLE = "available"
UNAVAILABLE = "unavailable"

WINDOW_SECONDS = 60.0
WINDOW_MAX_SAMPLES = 4096   # bounds memory whatever the poll rate


@dataclass(frozen=True)
class MeterUpdate:
    """Values from one successful read of one meter."""

    name: str
    device_id: int
    values: Mapping[str, Optional[float]]
    timestamp: float
    complete: bool = False     # True on the read that ends a full cycle of the meter


@dataclass(frozen=True)
class AvailabilityUpdate:
    """A meter turned available or unavailable."""

    name: str
    device_id: int
    status: str
    timestamp: float


@dataclass(frozen=True)
class StatusUpdate:
    status: Mapping
    timestamp: float


@dataclass
class BusState:
    """One bus's connection as the outputs see it."""

    name: str
    port: str = ""
    transport: str = "serial"
    connected: bool = False
    reconnects: int = 0
    hint: Optional[str] = None      # what the link suspects is wrong (a gateway in the wrong mode)
    mode: str = "poll"
    listen: Optional[Mapping[str, object]] = None   # a listened bus's findings (sdm/listen.py)


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

    @property
    def name(self) -> str:
        return self.config.name

    def readings(self) -> dict:
        return readings(self.config.name, self.device_id, self.timestamp, self.values)

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
        return readings(self.config.name, self.device_id, newest, means)


Subscriber = Callable[[object], None]


class Hub:
    """Meters by name, their readings, the buses' state, and the subscribers to updates."""

    def __init__(self, configs: Iterable[MeterConfig], buses: Iterable[BusState] = ()):
        configs = list(configs)
        self.started = time.time()
        self.buses: Dict[str, BusState] = {bus.name: bus for bus in buses}
        for config in configs:
            self.buses.setdefault(config.bus, BusState(config.bus))
        order = list(self.buses)
        self.meters: Dict[str, MeterState] = {
            cfg.name: MeterState(cfg)
            for cfg in sorted(configs, key=lambda c: (order.index(c.bus), c.device_id))}
        self.sections: Dict[str, Dict[str, object]] = {}   # extra /status sections of outputs (e.g. Mqtt)
        self.serving: List[object] = []     # the Modbus servers' ServeStats (sdm/serve.py)
        self._subscribers: List[Subscriber] = []
        self._failed: List[Subscriber] = []     # subscribers whose failure was logged once

    # -- written by the pollers ------------------------------------------------
    def publish(self, name: str, values: Mapping[str, Optional[float]],
                timestamp: Optional[float] = None, complete: bool = False) -> None:
        """Merge a successful read into the meter's last values and tell subscribers."""
        meter = self.meters[name]
        now = timestamp or time.time()
        meter.values.update(values)
        meter.timestamp = meter.last_good = now
        meter.window.append((now, dict(values)))
        meter.prune(now)
        meter._json = None
        if complete:
            meter.complete_readings += 1
        self._emit(MeterUpdate(name, meter.device_id, dict(values), now, complete))

    def set_status(self, name: str, status: str) -> None:
        meter = self.meters[name]
        if meter.status == status:
            return
        meter.status = status
        meter._json = None
        if status == UNAVAILABLE:
            meter.window.clear()
        log.info("bus %s, meter %s (id %d): %s", meter.config.bus, name, meter.device_id, status)
        self._emit(AvailabilityUpdate(name, meter.device_id, status, time.time()))

    def count(self, name: str, error_kind: Optional[str] = None) -> None:
        """One request to a meter, failed with ``error_kind`` or successful (None)."""
        meter = self.meters[name]
        meter.requests += 1
        if error_kind:
            meter.errors[error_kind] += 1

    def bus_state(self, bus: str, connected: bool, reopened: bool = False,
                  hint: Optional[str] = None, listen: Optional[Mapping[str, object]] = None) -> None:
        """A bus's link opened or closed (``reopened``: open again after a failure); ``listen``:
        what a listening bus has heard so far."""
        state = self.buses[bus]
        if listen is not None:
            state.listen = listen
        state.connected = connected
        if reopened:
            state.reconnects += 1
        if hint is not None:
            state.hint = hint or None

    def publish_status(self, status: Mapping) -> None:
        self._emit(StatusUpdate(status, time.time()))

    # -- read by the outputs ---------------------------------------------------
    def available(self) -> List[MeterState]:
        return [m for m in self.meters.values() if m.status == AVAILABLE]

    def with_id(self, device_id: int) -> List[MeterState]:
        """Every meter with this MODBUS id (one per bus that has it)."""
        return [m for m in self.meters.values() if m.device_id == device_id]

    def on_bus(self, bus: str) -> List[MeterState]:
        return [m for m in self.meters.values() if m.config.bus == bus]

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
