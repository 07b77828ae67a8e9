"""Time for one complete reading of a meter on a paced line, against the wire minimum.

Each row polls one virtual meter with the gateway's own poller (in-process,
under gevent as in sdm630_httpd) and times complete readings in steady state.
The wire minimum is sdm.plan.wire_time of the requests the planner chose:
every character at the line rate plus 3.5 characters of silence per frame.
The same measurements read one value per request (gosdm630's way) give the
speed-up.  Unless a row says otherwise: 9600 8N1, no turnaround, no pause.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from sdm.meters.registry import MODELS
from sdm.poller import PollSettings

from .common import comset, paced_simulator, poll_in_process, rounded, wire_ms

TYPES = ["sdm630", "sdm120", "sdm220", "sdm230", "sdm530", "janitza", "dzg"]
MIN_SPAN = 2.0      # seconds of steady-state readings per figure
LIMIT = 30.0        # the most one figure may take

RATIO_TARGET = 1.10
SPEEDUP_TARGET = 2.5


def measure(key: str, baud: int = 9600, parity: str = "N", turnaround_ms: float = 0.0,
            pause: Optional[float] = 0.0) -> Dict[str, object]:
    """One row: our plan and one value per request, for one meter type on one line."""
    line = comset(baud, parity)
    devices = f"{key}:1"
    pauses = None if pause is None else {key: pause}
    row: Dict[str, object] = {"meter": key, "line": f"{baud} 8{parity}1",
                              "turnaround_ms": turnaround_ms,
                              "pause_ms": round(1000 * (MODELS[key].pause if pause is None else pause))}
    with paced_simulator(devices, line, turnaround_ms) as sim:
        ours = poll_in_process(devices, line, sim.link, PollSettings(pauses=pauses), MIN_SPAN, LIMIT)
        single = poll_in_process(devices, line, sim.link, PollSettings(pauses=pauses, merge=False),
                                 MIN_SPAN, LIMIT)
    blocks = ours.plans[1]
    reading, one_by_one = ours.period(1), single.period(1)
    minimum = wire_ms(blocks, line)
    row.update({
        "values": len(MODELS[key].registers),
        "requests": len(blocks),
        "reading_ms": rounded(reading and 1000 * reading),
        "wire_min_ms": round(minimum, 1),
        "ratio": rounded(reading and 1000 * reading / minimum, 3),
        "one_per_request_ms": rounded(one_by_one and 1000 * one_by_one),
        "speedup": rounded(reading and one_by_one and one_by_one / reading, 2),
    })
    return row


def targets(per_type: List[dict]) -> List[dict]:
    found = []
    for row in per_type:
        found.append({"target": f"{row['meter']} reading within {RATIO_TARGET}x of the wire minimum at 9600",
                      "figure": row["ratio"], "holds": row["ratio"] is not None and row["ratio"] <= RATIO_TARGET})
    sdm630 = next(row for row in per_type if row["meter"] == "sdm630")
    found.append({"target": f"sdm630 full set at least {SPEEDUP_TARGET}x faster than one value per request",
                  "figure": sdm630["speedup"],
                  "holds": sdm630["speedup"] is not None and sdm630["speedup"] >= SPEEDUP_TARGET})
    return found


def run() -> dict:
    per_type = [measure(key) for key in TYPES]
    sdm630 = [measure("sdm630", baud=baud) for baud in (2400, 19200, 38400)]
    sdm630.append(measure("sdm630", turnaround_ms=30.0))
    sdm630.append(measure("sdm630", pause=None))   # the default, safe pause for real meters
    return {
        "per meter type (9600 8N1, no turnaround, no pause)": per_type,
        "sdm630 on other lines, with turnaround, with the default pause": sdm630,
        "targets": targets(per_type),
    }
