"""The readings hub: what every output reads, and what the bus pollers write.

For each configured meter it keeps the last value of every measurement, a
bounded one-minute window for averages, the meter's status and counters,
and the serialized Readings JSON (made once per change, not per request);
for each bus its connection state.  Every reading passes :class:`sdm.sanity.Sanity`
first: what the outputs get is its decision (impossible values null, energy
counters held back over glitches); the raw values are kept apart, for
``/last/{id}?raw=1`` only.  A meter is known by its name (unique in
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
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple
from typing import Counter as TypingCounter

from .config import MeterConfig
from .readings import dumps, readings, rfc3339
from .sanity import COUNTERS, Checked, CounterEvent, Sanity

log = logging.getLogger(__name__)

AVAILABLE = "available"
UNAVAILABLE = "unavailable"

WINDOW_SECONDS = 60.0
WINDOW_MAX_SAMPLES = 4096   # bounds memory whatever the poll rate
RECENT_EVENTS = 2 * len(COUNTERS)   # per meter for /status: every counter of a meter reset twice


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
    status: Mapping[str, Any]
    timestamp: float


class ServedStats(Protocol):
    """A Modbus server's counters as /status shows them (sdm/serve.py)."""

    def snapshot(self) -> Dict[str, Any]: ...


@dataclass
class BusState:
    """One bus's connection as the outputs see it."""

    name: str
    port: str = ""
    transport: str = "serial"
    connected: bool = False
    reconnects: int = 0
    hint: Optional[str] = None      # what the link suspects is wrong (a gateway in the wrong mode)
    line: str = ""                  # the serial setting, e.g. "9600 8N1" (for sdm_doctor --from-status)
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
    errors: TypingCounter[str] = field(default_factory=Counter)
    timing: Dict[str, object] = field(default_factory=dict)   # learned figures (sdm.timing summary)
    window: Deque[Tuple[float, Mapping[str, Optional[float]]]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_MAX_SAMPLES))
    raw: Dict[str, Optional[float]] = field(default_factory=dict)    # as read, before the checks
    events: Deque[CounterEvent] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    _json: Optional[bytes] = None

    @property
    def device_id(self) -> int:
        return self.config.device_id

    @property
    def name(self) -> str:
        return self.config.name

    def readings(self) -> Dict[str, Any]:
        return readings(self.config.name, self.device_id, self.timestamp, self.values)

    def readings_json(self) -> bytes:
        if self._json is None:
            self._json = dumps(self.readings())
        return self._json

    def raw_readings_json(self) -> bytes:
        """The unchecked values of the newest reading, for diagnosis (made per request: rare)."""
        return dumps(readings(self.config.name, self.device_id, self.timestamp, self.raw))

    def age(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds since the last good reading, None if there never was one."""
        if not self.last_good:
            return None
        return (now or time.time()) - self.last_good

    def prune(self, now: float) -> None:
        while self.window and self.window[0][0] < now - WINDOW_SECONDS:
            self.window.popleft()

    def minute_average(self, now: Optional[float] = None) -> Dict[str, Any]:
        """Per-measurement mean over the last minute; nulls for an empty window.

        An energy counter's "average" is its last accepted value: a mean of a rising count is a
        number the meter never showed, and would lag behind what the other outputs publish.
        """
        self.prune(now or time.time())
        sums: Dict[str, float] = {}
        counts: Dict[str, int] = {}
        for _, values in self.window:
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0) + 1
        means = {name: self.values[name] if name in COUNTERS else sums[name] / counts[name]
                 for name in sums}
        newest = self.window[-1][0] if self.window else 0.0
        return readings(self.config.name, self.device_id, newest, means)


Subscriber = Callable[[object], None]


class Hub:
    """Meters by name, their readings, the buses' state, and the subscribers to updates."""

    def __init__(self, configs: Iterable[MeterConfig], buses: Iterable[BusState] = (),
                 sanity: Optional[Sanity] = None):
        configs = list(configs)
        self.started = time.time()
        self.sanity = sanity or Sanity()
        self.buses: Dict[str, BusState] = {bus.name: bus for bus in buses}
        for config in configs:
            self.buses.setdefault(config.bus, BusState(config.bus))
        order = list(self.buses)
        self.meters: Dict[str, MeterState] = {
            cfg.name: MeterState(cfg)
            for cfg in sorted(configs, key=lambda c: (order.index(c.bus), c.device_id))}
        self._sections: Dict[str, Callable[[], Mapping[str, object]]] = {}   # extra /status sections
        self.serving: List[ServedStats] = []   # the Modbus servers' counters (sdm/serve.py)
        self._subscribers: List[Subscriber] = []
        self._failed: List[Subscriber] = []     # subscribers whose failure was logged once
        self.changes = 0    # counts every change an output could show (sdm.answers caches by it)

    # -- written by the pollers ------------------------------------------------
    def publish(self, name: str, values: Mapping[str, Optional[float]],
                timestamp: Optional[float] = None, complete: bool = False) -> None:
        """Check a successful read, merge what may be published into the meter's last values and
        tell subscribers (they never see a raw value)."""
        meter = self.meters[name]
        now = timestamp or time.time()
        checked = self.sanity.check(name, meter.config.model, values, now)
        self._log_checks(meter, checked)
        published = checked.values
        meter.raw.update(values)
        meter.values.update(published)
        meter.timestamp = meter.last_good = now
        meter.window.append((now, published))
        meter.prune(now)
        meter._json = None
        if complete:
            meter.complete_readings += 1
        self._emit(MeterUpdate(name, meter.device_id, dict(published), now, complete))

    def _log_checks(self, meter: MeterState, checked: Checked) -> None:
        """One line per refused value or counter event; held-back readings only with -v."""
        bus = meter.config.bus
        for value_name, raw in checked.refused.items():
            log.debug("bus %s, meter %s: %s read %r, outside its physical bounds; published as null",
                      bus, meter.name, value_name, raw)
        for event in checked.events:
            if event.held:
                log.debug("bus %s, %s", bus, event.message())
            else:
                meter.events.append(event)
                log.warning("bus %s, %s", bus, event.message())

    def checks(self, meter: MeterState) -> Dict[str, object]:
        """What /status shows of the checks of one meter: counts by kind, recent resets and steps."""
        return {
            "Counts": self.sanity.counts(meter.name),
            "CounterEvents": [
                {"Time": rfc3339(event.timestamp), "Value": event.name, "Kind": event.kind,
                 "From": event.previous, "To": event.published}
                for event in meter.events],
        }

    def drop(self, name: str, names: Sequence[str]) -> None:
        """Values a meter is no longer asked for: null from now on, never an old number with a
        new timestamp (subscribers learn it with the meter's next update)."""
        meter = self.meters[name]
        for value_name in names:
            meter.values[value_name] = meter.raw[value_name] = None
        meter._json = None

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
        self.changes += 1
        if error_kind:
            meter.errors[error_kind] += 1

    def timing(self, name: str, figures: Mapping[str, object]) -> None:
        """A meter's learned timing, as its bus last reported it (for /status and the page)."""
        self.meters[name].timing = dict(figures)

    def bus_state(self, bus: str, connected: bool, reopened: bool = False,
                  hint: Optional[str] = None, listen: Optional[Mapping[str, object]] = None) -> None:
        """A bus's link opened or closed (``reopened``: open again after a failure); ``listen``:
        what a listening bus has heard so far."""
        state = self.buses[bus]
        self.changes += 1
        if listen is not None:
            state.listen = listen
        state.connected = connected
        if reopened:
            state.reconnects += 1
        if hint is not None:
            state.hint = hint or None

    # -- changed by a reloaded configuration (SIGHUP, sdm.reload) --------------
    def add_meter(self, config: MeterConfig) -> None:
        """Serve one more meter (its name is new); an unknown bus gets a state of its own."""
        self.buses.setdefault(config.bus, BusState(config.bus))
        self.meters[config.name] = MeterState(config)
        self.changes += 1

    def remove_meter(self, name: str) -> None:
        del self.meters[name]
        self.changes += 1

    def publish_status(self, status: Mapping[str, Any]) -> None:
        self._emit(StatusUpdate(status, time.time()))

    def add_section(self, name: str, report: Callable[[], Mapping[str, object]]) -> None:
        """An output's own part of /status (e.g. ``Mqtt``): ``report`` is asked at each /status."""
        self._sections[name] = report

    def sections(self) -> Dict[str, Dict[str, object]]:
        """Every output's /status part, as it is now."""
        return {name: dict(report()) for name, report in self._sections.items()}

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
        self.changes += 1
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:   # one broken output must stop neither the poller nor itself for good
                if subscriber not in self._failed:
                    self._failed.append(subscriber)
                    log.exception("subscriber %r failed on %s; it stays subscribed, later failures "
                                  "are not logged", subscriber, type(event).__name__)
