"""Learned timing, per meter: how long it takes to answer, and how much quiet it needs.

Every peer asks the user for fixed figures (timeout, pause) that nobody has
measured; here the poller measures them on every exchange instead.

Timeout.  Each good reply adds its turnaround (end of request to first reply
byte, see sdm.framing.timed) to a window of the last :data:`SAMPLES`.  Once
the window holds :data:`MIN_SAMPLES`, the timeout is the slowest turnaround in
it times :data:`TIMEOUT_FACTOR` plus :data:`TIMEOUT_MARGIN`: the highest
percentile there is, with room for a meter slower than anything seen so far.
It never drops below what the line needs (``floor``) and never rises above
the configured timeout (``ceiling``), which is also what a meter gets before
it has been learned and right after a timeout (a retry waits the full time).

Pause.  The least quiet time after a meter's answer that it handles without
errors, found by bisection between the lowest pause that stayed clean
(``good``, at first the model's default) and the highest that failed
(``bad``, at first unknown: then the trial halves ``good``).  A trial is
made only after :data:`CLEAN_TO_STEP` clean exchanges in a row, never while
the meter is failing.  A timeout or garbled reply at a trial pause ends the
trial: back to ``good``; the same trial is made once more later, and only a
second failure counts (a busy host or a burst of noise fails one exchange now
and then, and one such must not cost a fast meter its speed for an hour).
Then ``bad`` becomes that pause plus :data:`PAUSE_MARGIN`, so the search ends
a little above the meter's limit rather than on its edge.  Two failures at
``good`` itself within :data:`STRIKE_WINDOW` tested exchanges (the meter got
slower, or its default is too short) raise the pause by half (at least
:data:`PAUSE_STEP_UP`); the bisection then works its way down again.  Only
the first failure of a run counts: a meter that sulks for seconds after one
request that came too soon must not drive the pause up with every retry.
Only exchanges whose request really went out within :data:`GAP_SLACK` of the
pause count as evidence: on a bus with
several meters, a request often waits for another meter's exchange, which
says nothing about this meter's pause.  Once the search has narrowed to
:data:`PAUSE_RESOLUTION`, the pause is held and re-checked (one trial a
resolution lower) after :data:`RECHECK_FIRST`, doubling up to
:data:`RECHECK_MAX` while re-checks fail: a re-check counts at its first
failure, so a meter whose limit is known loses at most one exchange per
re-check.  A configured pause switches all of this off.

The figures are ours, not a vendor's: Eastron documents "up to 60 ms" of
pause and no turnaround; what a meter really needs is what these rules find.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Mapping, Optional

from .state import atomic_write

log = logging.getLogger(__name__)

SAMPLES = 256               # turnarounds kept per meter
MIN_SAMPLES = 20            # before this many, the configured timeout applies
TIMEOUT_FACTOR = 1.25
TIMEOUT_MARGIN = 0.020      # s
MIN_TIMEOUT = 0.050         # s: the least timeout any line gets (a busy host's scheduling jitter, a USB
                            # adapter's latency timer: both come on top of what the meter needs)
CLEAN_TO_STEP = 20          # clean exchanges at a pause before a lower one is tried
PAUSE_RESOLUTION = 0.004    # s: the search stops when good and bad are this close
PAUSE_MARGIN = 0.005        # s: the least a learned pause stays above one that failed
PAUSE_STEP_UP = 0.010       # s: the least step up when the proven pause fails ...
PAUSE_GROWTH = 1.5          # ... else it grows by this factor (bisection then finds the least again)
MIN_TRIAL = 0.002           # s: a trial pause below this is 0
MAX_PAUSE = 0.500           # s: the most a learned pause grows to
GAP_SLACK = 0.005           # s: a request later than pause + this is no test of the pause
STRIKE_WINDOW = 20          # tested exchanges within which the proven pause must fail twice to grow
RECHECK_FIRST = 3600.0      # s: a converged pause is tried one step lower after this long
RECHECK_MAX = 86400.0
PAUSE_KINDS = frozenset({"timeout", "short", "crc", "malformed"})   # what too short a pause causes
STATE_FILE = "timing.json"
STATE_VERSION = 1
SAVED_SAMPLES = 64


def percentile(values: Iterable[float], q: float) -> Optional[float]:
    """The ``q`` (0..1) quantile by nearest rank; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[rank]


class MeterTiming:
    """One meter's learned timeout and pause (see the module doc)."""

    def __init__(self, default_pause: float, ceiling: float, floor: float = MIN_TIMEOUT,
                 fixed_pause: Optional[float] = None):
        self.ceiling = ceiling
        self.floor = min(max(floor, MIN_TIMEOUT), ceiling)
        self.learning = fixed_pause is None
        self.pause = default_pause if fixed_pause is None else fixed_pause
        self.good = self.pause        # the lowest pause that stayed clean
        self.bad: Optional[float] = None   # the highest pause that failed
        self.clean = 0                # clean exchanges in a row at the current pause
        self.failing = False          # the last exchange failed
        self.hold_until = 0.0         # no trial before this (monotonic s)
        self.recheck = RECHECK_FIRST
        self.samples: Deque[float] = deque(maxlen=SAMPLES)
        self.suspect: Optional[float] = None   # a trial pause that failed once: tried again before it counts
        self.rechecking = False       # the trial under way re-checks a converged pause
        self.strike_age: Optional[int] = None   # tested exchanges since the proven pause failed once

    @property
    def timeout(self) -> float:
        if self.failing or len(self.samples) < MIN_SAMPLES:
            return self.ceiling
        learned = max(self.samples) * TIMEOUT_FACTOR + TIMEOUT_MARGIN
        return min(self.ceiling, max(self.floor, learned))

    @property
    def converged(self) -> bool:
        return self.bad is not None and self.good - self.bad <= PAUSE_RESOLUTION + 1e-9   # float sums

    def answered(self, turnaround: Optional[float], gap: Optional[float], now: float) -> None:
        """A good reply; ``gap``: seconds from this meter's previous answer to this request."""
        if turnaround is not None:
            self.samples.append(turnaround)
        self.failing = False
        if not self.learning or not self._tests_pause(gap):
            return
        self.clean += 1
        if self.strike_age is not None:
            self.strike_age = None if self.strike_age >= STRIKE_WINDOW else self.strike_age + 1
        if self.clean < CLEAN_TO_STEP:
            return
        self.clean = 0
        if self.pause < self.good:        # a trial passed
            self.good = self.pause
            self.suspect = None
            self.rechecking = False
            self.recheck = RECHECK_FIRST
            if self.converged:
                self._hold(now)
                return
        self._next_trial(now)

    def failed(self, kind: str, gap: Optional[float], now: float) -> None:
        """A failed exchange of error ``kind``; only the first of a run can move the pause."""
        first = not self.failing
        self.failing = True
        self.clean = 0
        if not (self.learning and first and kind in PAUSE_KINDS and self._tests_pause(gap)):
            return
        if self.pause < self.good:        # a trial failed: back to the proven pause
            trial, self.pause = self.pause, self.good
            if self.rechecking or self.suspect == trial:
                # the search ends at least a margin above a pause that failed: a meter's limit is
                # not sharp, and the host's timing jitters by a few ms
                self.bad = min(trial + PAUSE_MARGIN, self.good)
                self.suspect, self.rechecking = None, False
            else:
                self.suspect = trial      # once may be chance (a busy host, a burst of noise)
        elif self.strike_age is None:     # the proven pause failed: once may be chance too
            self.strike_age = 0
            return
        else:                             # ... twice within STRIKE_WINDOW is not
            self.bad = self.pause
            self.pause = self.good = min(max(self.pause * PAUSE_GROWTH, self.pause + PAUSE_STEP_UP), MAX_PAUSE)
            self.strike_age = None
        if self.converged:
            self._hold(now)

    def _tests_pause(self, gap: Optional[float]) -> bool:
        return gap is not None and gap <= self.pause + GAP_SLACK

    def _next_trial(self, now: float) -> None:
        if self.suspect is not None:
            self.pause = self.suspect
            return
        if self.converged:
            if now < self.hold_until:
                return
            self.bad = max(0.0, self.good - 2 * PAUSE_RESOLUTION)   # re-check: one step lower
            self.rechecking = True
        if self.good <= 0.0:
            return
        trial = self.good / 2 if self.bad is None else (self.good + self.bad) / 2
        self.pause = 0.0 if trial < MIN_TRIAL else trial

    def _hold(self, now: float) -> None:
        self.hold_until = now + self.recheck
        self.recheck = min(self.recheck * 2, RECHECK_MAX)

    def summary(self) -> Dict[str, Any]:
        """What /status shows: turnaround percentiles, timeout and pause in ms, and the mode."""
        def ms(value: Optional[float]) -> Optional[float]:
            return None if value is None else round(value * 1000.0, 1)
        return {
            "TurnaroundMs": {"p50": ms(percentile(self.samples, 0.5)), "p95": ms(percentile(self.samples, 0.95)),
                             "max": ms(max(self.samples, default=None))},
            "TimeoutMs": ms(self.timeout),
            "PauseMs": ms(self.pause),
            "Learning": "pause and timeout" if self.learning else "timeout (pause is configured)",
        }

    def to_state(self) -> Dict[str, Any]:
        return {"pause": self.pause, "good": self.good, "bad": self.bad,
                "turnarounds": [round(t, 5) for t in list(self.samples)[-SAVED_SAMPLES:]]}

    def restore(self, state: Mapping[str, Any], now: float) -> None:
        """Take over what an earlier run learned; a malformed entry raises ValueError."""
        samples = [float(t) for t in state.get("turnarounds", []) if 0 <= float(t) <= self.ceiling]
        good, bad = float(state["good"]), state.get("bad")
        if not 0 <= good <= MAX_PAUSE or (bad is not None and not 0 <= float(bad) <= good):
            raise ValueError(f"pause {good} / {bad} out of range")
        self.samples.extend(samples)
        if not self.learning:
            return
        self.pause = self.good = good
        self.bad = None if bad is None else float(bad)
        if self.converged:
            self._hold(now)


def meter_key(bus: str, device_id: int) -> str:
    return f"{bus}/{device_id}"


class TimingFile:
    """The learned timing of every meter of every bus, in one JSON file in the state directory.

    Bus threads share one instance: each updates its own meters' entries and
    writes the whole file (atomically, under a lock), so buses never overwrite
    each other's figures.  An entry names the meter's model; one made for
    another model at that id is not used.
    """

    def __init__(self, directory: Path):
        self.path = directory / STATE_FILE
        self._lock = threading.Lock()
        self.entries: Dict[str, Dict[str, Any]] = self._read()

    def _read(self) -> Dict[str, Dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("timing state %s unreadable (%s); learning afresh", self.path, err)
            return {}
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not isinstance(
                data.get("meters"), dict):
            log.warning("timing state %s has an unknown layout; learning afresh", self.path)
            return {}
        return {key: entry for key, entry in data["meters"].items() if isinstance(entry, dict)}

    def entry(self, bus: str, device_id: int, model: str) -> Optional[Dict[str, Any]]:
        """The saved entry of that meter, if it was saved for the same model."""
        entry = self.entries.get(meter_key(bus, device_id))
        if entry is None or entry.get("model") != model:
            return None
        return entry

    def save(self, updates: Mapping[str, Dict[str, Any]]) -> None:
        """Merge ``updates`` (meter key -> entry) and write the file; OSError is logged, not raised."""
        with self._lock:
            self.entries.update(updates)
            data = json.dumps({"version": STATE_VERSION, "meters": self.entries}, indent=1, sort_keys=True)
            try:
                atomic_write(self.path, data.encode("utf-8"))
            except OSError as err:
                log.warning("cannot write timing state %s: %s", self.path, err)


def restore_timing(timing: MeterTiming, saved: Optional[Mapping[str, Any]], label: str,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Restore ``saved`` into ``timing``; a broken entry is logged and ignored."""
    if saved is None:
        return
    try:
        timing.restore(saved, clock())
    except (KeyError, TypeError, ValueError) as err:
        log.warning("%s: saved timing ignored (%s)", label, err)
        return
    log.info("%s: restored timing: pause %.0f ms, timeout %.0f ms", label, timing.pause * 1000,
             timing.timeout * 1000)
