"""Learned timing (sdm.timing) against simulated meters that differ in what they need, default settings.

Each row runs the gateway's own poller in-process (as bench/reading.py does) with
default settings, a state directory of its own, and one SDM630 at 9600 8N1 on a
paced pty that behaves as the row says:

* no pause needed: how close a complete reading comes to the wire minimum of the
  plan in use, measured over the last quarter of the first minute;
* ignores requests within 60 ms of its last answer: the pause learned, how long
  until the learner converged, the exchanges lost until then and after it
  (extrapolated per hour: the re-check that may cost one comes after an hour,
  so a run of minutes sees none; a loss after convergence is what it catches);
* turnaround jittering 20-120 ms: timeouts (none may come from a learned timeout
  that is too short) and the timeout learned.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import gevent
from gevent.threadpool import ThreadPool

from sdm.bus import blocking_sleep
from sdm.framing.rtu import RtuLink
from sdm.hub import Hub, MeterUpdate
from sdm.poller import Poller, PollSettings
from sdm.transport.serial import SerialTransport

from .common import comset, configs, paced_simulator, rounded, wire_ms

FIRST_MINUTE = 60.0
PAUSE_RUN = 240.0       # s of the 60 ms meter: learning (until the learner says it converged), then steady state
JITTER_RUN = 90.0
RATIO_TARGET = 1.10


class CountingHub(Hub):
    """The hub, noting when each failed exchange happened and of what kind."""

    def __init__(self, meters):
        super().__init__(meters)
        self.failures: List[Tuple[float, str]] = []

    def count(self, name: str, error_kind: Optional[str] = None) -> None:
        super().count(name, error_kind)
        if error_kind:
            self.failures.append((time.monotonic(), error_kind))


def poll_for(seconds: float, extra: List[str],
             on_tick: Callable[[Poller], None] = lambda poller: None) -> Tuple[Poller, CountingHub, List[float], float]:
    """Poll one SDM630 (simulated with ``extra`` options) for ``seconds``: the poller, its hub,
    the times of complete readings and the start time.  The hub hears the poller's thread
    directly; it is read only after the poller stopped."""
    devices, line = "sdm630:1", comset()
    meters = configs(devices)
    hub = CountingHub(meters)
    complete: List[float] = []
    hub.subscribe(lambda event: isinstance(event, MeterUpdate) and event.complete
                  and complete.append(time.monotonic()))
    pool = ThreadPool(1)
    with paced_simulator(devices, line, 0.0, extra) as sim:
        # a native thread with blocking I/O, as sdm.bus runs a bus: the serial line blocks, never yields
        poller = Poller(hub, RtuLink(SerialTransport(str(sim.link), line)), meters, PollSettings(),
                        sleep=blocking_sleep)
        started = time.monotonic()
        task = pool.spawn(poller.run)
        while time.monotonic() < started + seconds and not task.ready():
            gevent.sleep(0.2)
            on_tick(poller)
        poller.stop()
        task.wait(2)
    pool.kill()
    return poller, hub, complete, started


def no_pause() -> Dict[str, object]:
    poller, hub, complete, started = poll_for(FIRST_MINUTE, [])
    reader = poller.readers[0]
    window = [t for t in complete if t >= started + 0.75 * FIRST_MINUTE]
    period = (window[-1] - window[0]) / (len(window) - 1) if len(window) > 1 else None
    minimum = wire_ms(reader.blocks, comset())
    ratio = period and 1000 * period / minimum
    return {"meter": "needs no pause", "pause_ms": round(reader.timing.pause * 1000, 1),
            "requests": len(reader.blocks), "reading_ms": rounded(period and 1000 * period),
            "wire_min_ms": round(minimum, 1), "ratio": rounded(ratio, 3), "lost": len(hub.failures),
            "target": f"read within {RATIO_TARGET}x of the wire minimum within a minute of start",
            "holds": ratio is not None and ratio <= RATIO_TARGET}


def pause_60() -> Dict[str, object]:
    converged: List[float] = []

    def note_convergence(poller: Poller) -> None:
        if not converged and poller.readers[0].timing.converged:
            converged.append(time.monotonic())

    poller, hub, _, started = poll_for(PAUSE_RUN, ["--min-pause", "1=60"], note_convergence)
    timing = poller.readers[0].timing
    learned_at = converged[0] if converged else started + PAUSE_RUN
    after = [kind for at, kind in hub.failures if at >= learned_at]
    measured = started + PAUSE_RUN - learned_at
    hours = max(measured, 1.0) / 3600
    # what the poller waits plus the silence it checks after every reply (rtu.check_alone): the gap the meter sees
    seen_gap_ms = 1000 * timing.pause + 1000 * 3.5 * comset().char_time
    return {"meter": "ignores requests within 60 ms", "pause_ms": round(timing.pause * 1000, 1),
            "quiet_the_meter_sees_ms": round(seen_gap_ms, 1),
            "learned_after_s": round(learned_at - started, 1),
            "lost_while_learning": len(hub.failures) - len(after), "lost_after": len(after),
            "measured_after_s": round(measured, 1),
            "lost_per_hour_extrapolated": round(len(after) / hours, 1),
            "target": "learned pause within 10 ms of 60; at most one lost exchange an hour once learned",
            "holds": bool(converged) and abs(timing.pause * 1000 - 60) <= 10 and len(after) / hours <= 1.0}


def jitter() -> Dict[str, object]:
    poller, hub, complete, _ = poll_for(JITTER_RUN, ["--turnaround", "1=20-120"])
    timing = poller.readers[0].timing
    timeouts = sum(kind == "timeout" for _, kind in hub.failures)
    return {"meter": "turnaround 20-120 ms", "timeout_ms": round(timing.timeout * 1000, 1),
            "turnaround_max_ms": round(max(timing.samples, default=0) * 1000, 1),
            "exchanges": hub.meters["Instrument1"].requests, "timeouts": timeouts,
            "target": "no timeouts from a learned timeout that is too short", "holds": timeouts == 0}


def run() -> dict:
    rows = [no_pause(), pause_60(), jitter()]
    return {"learned timing, one SDM630 at 9600 8N1, default settings": [
        {k: v for k, v in row.items() if k not in ("target", "holds")} for row in rows],
        "targets": [{"target": row["target"], "figure": row.get("ratio", row.get("pause_ms")),
                     "holds": row["holds"]} for row in rows]}
