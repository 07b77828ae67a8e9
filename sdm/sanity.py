"""What a reading may publish: physical bounds of every value, and the rules of energy counters.

Every output shows one filtered truth, decided here; the hub calls :meth:`Sanity.check` once per
reading and publishes what it returns:

* :func:`bounded` / :func:`screen`: a value outside the physics of its kind (a power factor of
  3.4e38, a frequency of 1.4e-45, a current far beyond the meter's rating) is null.
* :class:`CounterGuard`: an energy counter (every kWh / kvarh measurement of the catalogue) never
  publishes 0, NaN, infinity or a missing value, never goes down, and never rises faster than the
  meter can count; a reading that would is held back (the last accepted value is published) and
  counted.  A lower or higher reading becomes the new truth only after it has been read
  consistently N times over at least T seconds (a meter replaced or cleared): then it is
  published once, with an event.
* :class:`CounterFile`: the last accepted values survive a restart, so that a gateway killed and
  started again never publishes a counter lower than before.

Why the defaults are what they are: docs/counters.md.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

from .encoding import Encoding
from .measurements import CATALOGUE
from .meters.model import MeterModel
from .state import atomic_write

if TYPE_CHECKING:   # typing has TypeGuard from Python 3.10 on; annotations here are never evaluated
    from typing_extensions import TypeGuard

COUNTER_UNITS = ("kWh", "kvarh")
COUNTERS: FrozenSet[str] = frozenset(name for name, m in CATALOGUE.items() if m.unit in COUNTER_UNITS)

# -- physical bounds ------------------------------------------------------------------------------

VOLTAGE_MAX = 1000.0            # V: no low-voltage meter sees more, phase to neutral or between phases
FREQUENCY_RANGE = (40.0, 70.0)  # Hz: 50 and 60 Hz grids with room for a generator's drift
ANGLE_MAX = 180.0               # degrees
PF_MAX = 1.0 + 1e-6             # cos phi, with one float32 step of room above 1
THD_MAX = 100.0                 # % of the fundamental
COUNTER_MAX = 1e9               # kWh: far above any meter's display (SDM630: 9,999,999.9 kWh)
# Instantaneous current and power may be up to this many times the rating: a meter measures
# somewhat beyond Imax and the voltage may be high; only values that cannot be are refused.
INSTANT_MARGIN = 2.0
VOLTAGE_HEADROOM = 1.3          # the highest phase voltage relative to nominal a meter still measures


@dataclass(frozen=True)
class Rating:
    """What a meter can carry: phases, nominal phase voltage (V), most current per phase (A)."""

    phases: int
    nominal_voltage: float
    max_current: float

    @property
    def phase_power(self) -> float:
        """The most power (W, VA or var) one phase can carry at nominal voltage."""
        return self.nominal_voltage * self.max_current

    @property
    def total_power(self) -> float:
        return self.phase_power * self.phases


def rating_of(model: MeterModel, max_current: Optional[float] = None) -> Rating:
    """The model's rating, with the current of a meter's own override (a CT-operated meter)."""
    current = model.max_current if max_current is None else max_current
    if not (current > 0 and math.isfinite(current)):
        raise ValueError(f"maximum current must be a positive number of amperes, not {max_current!r}")
    return Rating(model.phases, model.nominal_voltage, current)


def _per_phase(name: str) -> bool:
    return name[-4:-1] == "Phs"


def bounds(name: str, rating: Rating) -> Tuple[float, float]:
    """The closed range a value of this measurement can physically take (KeyError if unknown)."""
    unit = CATALOGUE[name].unit
    if unit == "V":
        return 0.0, VOLTAGE_MAX
    if unit == "Hz":
        return FREQUENCY_RANGE
    if unit == "%":
        return 0.0, THD_MAX
    if unit == "°":
        return -ANGLE_MAX, ANGLE_MAX
    if unit == "":
        return -PF_MAX, PF_MAX
    if unit == "A":
        limit = rating.max_current * INSTANT_MARGIN
        return -limit, limit
    if unit in ("W", "VA", "var"):
        power = rating.phase_power if _per_phase(name) else rating.total_power
        limit = power * VOLTAGE_HEADROOM * INSTANT_MARGIN
        return -limit, limit
    if unit in COUNTER_UNITS:
        return 0.0, COUNTER_MAX
    raise KeyError(f"no physical bounds for unit {unit!r} of {name}")


def bounded(model: MeterModel, name: str, value: Optional[float],
            rating: Optional[Rating] = None) -> Optional[float]:
    """``value`` when it is a number within the bounds of its kind, else None.

    Energy counters get only their range checked here; :class:`CounterGuard` decides the rest.
    """
    if value is None or not math.isfinite(value):
        return None
    low, high = bounds(name, rating or rating_of(model))
    return value if low <= value <= high else None


@dataclass(frozen=True)
class Screened:
    """The values of one reading with impossible ones made None, and what was refused (raw)."""

    values: Dict[str, Optional[float]]
    refused: Dict[str, float]


def screen(model: MeterModel, values: Mapping[str, Optional[float]],
           rating: Optional[Rating] = None) -> Screened:
    """Apply :func:`bounded` to every value but the energy counters (those go to the guard)."""
    rating = rating or rating_of(model)
    kept: Dict[str, Optional[float]] = {}
    refused: Dict[str, float] = {}
    for name, value in values.items():
        if name in COUNTERS or value is None:
            kept[name] = value
            continue
        kept[name] = bounded(model, name, value, rating)
        if kept[name] is None:
            refused[name] = value
    return Screened(kept, refused)


# -- energy counters --------------------------------------------------------------------------------

DROP = "drop"          # lower than the last accepted value: held back
JUMP = "jump"          # higher than the meter could have counted since: held back
INVALID = "invalid"    # 0, negative, NaN, infinite, absurdly large or missing: held back
RESET = "reset"        # a lower value read consistently: accepted, published once
STEP = "step"          # a higher value read consistently: accepted, published once
HELD = (DROP, JUMP, INVALID)
KINDS = HELD + (RESET, STEP)


@dataclass(frozen=True)
class CounterPolicy:
    """The numbers of the counter rules (reasons in docs/counters.md)."""

    confirm_readings: int = 5        # N: consistent readings before a lower/higher value is believed
    confirm_seconds: float = 60.0    # T: ... spanning at least this long
    power_margin: float = 2.0        # the fastest plausible rise: rated power x this
    slack_kwh: float = 0.01          # absolute room on every comparison, on top of the register step
    # Readings of a counter that has no accepted value yet (a first start without a state file, a
    # new meter) before its first value is published; 1: the first valid reading.  There is
    # nothing to compare a first value with, and a gateway must show its counters at once.
    first_readings: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.confirm_readings, int) and self.confirm_readings >= 2):
            raise ValueError("confirm_readings must be a whole number of at least 2")
        if not (isinstance(self.first_readings, int) and self.first_readings >= 1):
            raise ValueError("first_readings must be a whole number of at least 1")
        for label, value in (("confirm_seconds", self.confirm_seconds), ("slack_kwh", self.slack_kwh)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be 0 or more")
        if not (math.isfinite(self.power_margin) and self.power_margin >= 1):
            raise ValueError("power_margin must be at least 1")


@dataclass(frozen=True)
class CounterEvent:
    """One decision worth telling: a reading held back, or a reset / step accepted.

    ``raw`` is what the meter said; ``published`` what the outputs show for this reading;
    ``previous`` the last accepted value before it (None when there was none).
    """

    meter: str
    name: str
    kind: str
    raw: Optional[float]
    published: Optional[float]
    previous: Optional[float]
    timestamp: float

    @property
    def held(self) -> bool:
        return self.kind in HELD

    def message(self) -> str:
        """One log line (the hub adds the bus): what was read, what was done."""
        unit = CATALOGUE[self.name].unit
        if self.held:
            raw = "no value" if self.raw is None else f"{self.raw} {unit}"
            return f"meter {self.meter}: {self.name} read {raw}, held back ({self.kind}); publishing {self.published}"
        return (f"meter {self.meter}: {self.name} {self.kind} accepted after confirmation: "
                f"{self.previous} -> {self.published} {unit}")


@dataclass(frozen=True)
class _RiseLimit:
    """How fast one counter can rise: kWh per hour at most, plus room for the register's step."""

    kw: float
    slack: float

    def allows(self, before: float, before_at: float, after: float, now: float) -> bool:
        return after - before <= self.kw * max(0.0, now - before_at) / 3600.0 + self.slack


@dataclass
class _Run:
    """Consecutive readings that agree with each other but not with the accepted value."""

    kind: Optional[str]      # DROP, JUMP, or None while a first value is being confirmed
    first_at: float
    last: float
    last_at: float
    count: int = 1


@dataclass
class _Track:
    accepted: Optional[float] = None
    accepted_at: float = 0.0
    run: Optional[_Run] = None
    # Restored from the state file and not yet met by an accepted reading: judged against, but not
    # published.  The file may lag behind what was published before a crash (it is written once a
    # minute), so showing it could show less than before; a truthful meter's first reading after
    # the restart is accepted and shown at once, a glitching one leaves the counter null meanwhile.
    restored: bool = False


@dataclass
class _Meter:
    model_key: str
    tracks: Dict[str, _Track] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)


def _invalid(raw: float) -> bool:
    return not math.isfinite(raw) or raw <= 0 or raw > COUNTER_MAX


class CounterGuard:
    """The one decision about every energy counter of every meter (see the module docstring).

    Keyed by a meter key (the hub uses the meter's unique name) and the measurement name.
    ``ratings`` overrides a model's rating for single meters (a CT-operated meter).
    """

    def __init__(self, policy: Optional[CounterPolicy] = None, ratings: Optional[Mapping[str, Rating]] = None):
        self.policy = policy or CounterPolicy()
        self.ratings: Dict[str, Rating] = dict(ratings or {})
        self._meters: Dict[str, _Meter] = {}
        self._encodings: Dict[str, Dict[str, Encoding]] = {}
        self.changes = 0          # accepted values so far: the state file is due when it moved
        self.confirmations = 0    # resets and steps so far: the state file is due at once

    # -- the decision ---------------------------------------------------------------------------
    def apply(self, meter_key: str, model: MeterModel, values: Mapping[str, Optional[float]],
              timestamp: float) -> Tuple[Dict[str, Optional[float]], List[CounterEvent]]:
        """The values to publish for one reading, and the events it caused.

        Counters in ``values`` are replaced by the last accepted value (None when none was ever
        accepted) unless the reading itself is accepted; other values pass unchanged, and names
        absent from ``values`` stay absent.
        """
        meter = self._meter(meter_key, model)
        rate_kw = self.rating(meter_key, model).total_power * self.policy.power_margin / 1000.0
        published = dict(values)
        events: List[CounterEvent] = []
        for name, raw in values.items():
            if name not in COUNTERS:
                continue
            track = meter.tracks.setdefault(name, _Track())
            previous = track.accepted
            kind = self._decide(track, name, model, raw, timestamp, rate_kw)
            published[name] = None if track.restored else track.accepted
            if kind is not None:
                meter.counts[kind] += 1
                events.append(CounterEvent(meter_key, name, kind, raw, published[name], previous, timestamp))
        return published, events

    def _decide(self, track: _Track, name: str, model: MeterModel, raw: Optional[float], now: float,
                rate_kw: float) -> Optional[str]:
        """Update one counter's track with a reading; the event kind, or None for a quiet accept."""
        if raw is None or _invalid(raw):
            track.run = None      # a run of consistent readings must be consecutive
            # A counter that has never moved from 0 (an export counter where nothing is exported)
            # is not a glitch: null, but not counted every reading.
            return None if raw == 0 and track.accepted is None else INVALID
        limit = _RiseLimit(rate_kw / model.phases if _per_phase(name) else rate_kw,
                           self._slack(model, name, raw if track.accepted is None else track.accepted))
        if track.accepted is None:
            return self._confirm(track, raw, now, None, limit)
        if track.accepted - limit.slack <= raw < track.accepted:
            track.run = None
            return None           # the same value within the register's resolution: no step down
        if raw < track.accepted:
            return self._confirm(track, raw, now, DROP, limit)
        if not limit.allows(track.accepted, track.accepted_at, raw, now):
            return self._confirm(track, raw, now, JUMP, limit)
        self._accept(track, raw, now)
        return None

    def _confirm(self, track: _Track, raw: float, now: float, kind: Optional[str],
                 limit: _RiseLimit) -> Optional[str]:
        """Hold ``raw`` back until N consecutive readings that continue each other span T seconds
        (a first value: until ``first_readings`` such readings, whatever time they span).

        Each reading of the run must be no lower than the one before (within the slack) and no
        higher than the meter could have counted since it.
        """
        run = track.run
        if (run is not None and run.kind == kind and raw >= run.last - limit.slack
                and limit.allows(run.last, run.last_at, raw, now)):
            run.count += 1
            run.last, run.last_at = raw, now
        else:
            run = track.run = _Run(kind, now, raw, now)
        if kind is None:
            confirmed = run.count >= self.policy.first_readings
        else:
            confirmed = (run.count >= self.policy.confirm_readings
                         and run.last_at - run.first_at >= self.policy.confirm_seconds)
        if not confirmed:
            return kind
        self._accept(track, raw, now)
        if kind is None:
            return None           # a first value: nothing to compare with, nothing to announce
        self.confirmations += 1
        return RESET if kind == DROP else STEP

    def _accept(self, track: _Track, raw: float, now: float) -> None:
        track.accepted, track.accepted_at, track.run, track.restored = raw, now, None, False
        self.changes += 1

    def _slack(self, model: MeterModel, name: str, value: float) -> float:
        encodings = self._encodings.setdefault(model.key, {r.name: r.encoding for r in model.registers})
        encoding = encodings.get(name, Encoding())
        return self.policy.slack_kwh + 2 * encoding.resolution(value)

    def rating(self, meter_key: str, model: MeterModel) -> Rating:
        """The rating a meter is judged by: its override, else its model's (pass it to screen())."""
        return self.ratings.get(meter_key) or rating_of(model)

    def _meter(self, meter_key: str, model: MeterModel) -> _Meter:
        meter = self._meters.get(meter_key)
        if meter is None or meter.model_key != model.key:   # new, or its model changed: start afresh
            meter = self._meters[meter_key] = _Meter(model.key)
        return meter

    # -- what /status shows ---------------------------------------------------------------------
    def counts(self, meter_key: str) -> Dict[str, int]:
        """Held-back readings (drop, jump, invalid) and accepted resets and steps of one meter."""
        meter = self._meters.get(meter_key)
        return {kind: (meter.counts[kind] if meter else 0) for kind in KINDS}

    def last_accepted(self, meter_key: str, name: str) -> Optional[float]:
        """The value outputs show for a counter (minute averages use it too)."""
        meter = self._meters.get(meter_key)
        track = meter.tracks.get(name) if meter else None
        return track.accepted if track else None

    def forget(self, meter_key: str) -> None:
        """Drop a meter that is no longer configured."""
        self._meters.pop(meter_key, None)

    # -- persistence ----------------------------------------------------------------------------
    def snapshot(self) -> Dict[str, Any]:
        """The last accepted value and time of every counter, as JSON-ready data."""
        meters = {}
        for key, meter in sorted(self._meters.items()):
            counters = {name: {"value": t.accepted, "at": t.accepted_at}
                        for name, t in sorted(meter.tracks.items()) if t.accepted is not None}
            if counters:
                meters[key] = {"model": meter.model_key, "counters": counters}
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "meters": meters}

    def restore(self, state: object, models: Mapping[str, MeterModel]) -> List[str]:
        """Take accepted values from a snapshot for the configured meters; warnings for what was not.

        An entry of a meter not in ``models`` or of another model is skipped; a malformed entry is
        skipped and reported.  Nothing is trusted that does not look exactly like a snapshot.
        """
        warnings: List[str] = []
        if not (isinstance(state, dict) and state.get("format") == STATE_FORMAT
                and state.get("version") == STATE_VERSION and isinstance(state.get("meters"), dict)):
            return ["not a counter state of this version; ignored"]
        for key, entry in state["meters"].items():
            model = models.get(key)
            if model is None:
                continue
            if not (isinstance(entry, dict) and isinstance(entry.get("counters"), dict)):
                warnings.append(f"meter {key}: malformed entry; ignored")
                continue
            if entry.get("model") != model.key:
                warnings.append(f"meter {key}: saved as model {entry.get('model')!r}, now {model.key}; ignored")
                continue
            warnings.extend(self._restore_meter(key, model, entry["counters"]))
        return warnings

    def _restore_meter(self, key: str, model: MeterModel, counters: Mapping[str, object]) -> List[str]:
        warnings = []
        meter = self._meter(key, model)
        for name, saved in counters.items():
            value, at = (saved.get("value"), saved.get("at")) if isinstance(saved, dict) else (None, None)
            if name not in COUNTERS or name not in model.names:
                warnings.append(f"meter {key}: {name!r} is not a counter of {model.key}; ignored")
            elif not (_number(value) and _number(at)) or _invalid(float(value)):
                warnings.append(f"meter {key}: {name} has no valid saved value; ignored")
            else:
                meter.tracks[name] = _Track(float(value), float(at), restored=True)
        return warnings


BOUNDS = "bounds"       # the /status count of values refused by their physical bounds


@dataclass(frozen=True)
class Checked:
    """One reading after the checks: what to publish, what was refused (raw), what to tell."""

    values: Dict[str, Optional[float]]
    refused: Dict[str, float]
    events: List[CounterEvent]


class Sanity:
    """The hub's one call per reading: physical bounds, then the counter guard; counts for /status."""

    def __init__(self, guard: Optional[CounterGuard] = None):
        self.guard = guard or CounterGuard()
        self._refused: Counter[str] = Counter()

    def check(self, meter_key: str, model: MeterModel, values: Mapping[str, Optional[float]],
              timestamp: float) -> Checked:
        screened = screen(model, values, self.guard.rating(meter_key, model))
        published, events = self.guard.apply(meter_key, model, screened.values, timestamp)
        self._refused[meter_key] += len(screened.refused)
        return Checked(published, screened.refused, events)

    def counts(self, meter_key: str) -> Dict[str, int]:
        """Per meter: values refused by bounds, counter readings held back by kind, resets, steps."""
        return {BOUNDS: self._refused[meter_key], **self.guard.counts(meter_key)}

    def forget(self, meter_key: str) -> None:
        self._refused.pop(meter_key, None)
        self.guard.forget(meter_key)


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


STATE_FORMAT = "sdm-counters"
STATE_VERSION = 1
STATE_FILE = "counters.json"
SAVE_INTERVAL = 60.0

Offload = Callable[[Callable[[], None]], None]   # runs a piece of blocking work, e.g. in a thread


def _at_once(work: Callable[[], None]) -> None:
    work()


class CounterFile:
    """The guard's accepted values in one JSON file of the state directory.

    Written atomically, only when something changed, and then at most every ``interval``
    seconds, except at once after a confirmed reset or step (and by :meth:`save` at a clean
    shutdown).  Between two writes the gateway may publish higher values than the file holds;
    after a crash it starts from the file and so never publishes lower than the file.
    """

    def __init__(self, path: Path, interval: float = SAVE_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.interval = interval
        self.clock = clock
        self._saved_changes = 0
        self._saved_confirmations = 0
        self._last_attempt: Optional[float] = None

    def load(self, guard: CounterGuard, models: Mapping[str, MeterModel]) -> List[str]:
        """Restore the guard from the file; warnings for a file that is damaged or partly stale.

        A missing file is a first start (no warning); an unreadable, truncated or garbage file is
        reported and ignored, never trusted.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as err:
            return [f"{self.path}: cannot be read ({err.strerror or err}); counters start afresh"]
        try:
            state = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return [f"{self.path}: damaged ({len(data)} bytes that are not a counter state); ignored, "
                    "counters start afresh"]
        warnings = guard.restore(state, models)
        self._saved_changes, self._saved_confirmations = guard.changes, guard.confirmations
        return [f"{self.path}: {text}" for text in warnings]

    def due(self, guard: CounterGuard) -> bool:
        """True when the file lags behind the guard and it is time (or urgent) to write."""
        if guard.confirmations != self._saved_confirmations:
            return True
        if guard.changes == self._saved_changes:
            return False
        return self._last_attempt is None or self.clock() - self._last_attempt >= self.interval

    def maybe_save(self, guard: CounterGuard, offload: Offload = _at_once) -> Optional[str]:
        """Write when :meth:`due`; the reason when writing failed (retried after the interval).

        ``offload`` runs the write (fsync can take long on an SD card): a gateway passes its
        thread pool, so the loop serving clients never waits for the disk.
        """
        if not self.due(guard):
            return None
        try:
            self.save(guard, offload)
        except OSError as err:
            self._saved_confirmations = guard.confirmations   # do not retry on every reading
            return f"{self.path}: cannot be written ({err.strerror or err}); retrying in {self.interval:g} s"
        return None

    def save(self, guard: CounterGuard, offload: Offload = _at_once) -> None:
        """Write now (at a clean shutdown); OSError when the file cannot be written.

        The snapshot is taken here, on the caller's thread (the guard is not shared with other
        threads); only the bytes go to ``offload``.
        """
        self._last_attempt = self.clock()
        changes, confirmations = guard.changes, guard.confirmations
        data = json.dumps(guard.snapshot(), indent=1, sort_keys=True).encode("utf-8")
        offload(lambda: atomic_write(self.path, data))
        self._saved_changes, self._saved_confirmations = changes, confirmations
