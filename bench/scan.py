"""Bus scan: time for sdm_detect's full scan of ids 1-247 at 9600 8N1, two meters on the bus.

Runs the scanner in-process against the simulator on a pty; the simulator is
paced at the line rate when it offers ``--baud``.  A silent id costs its wait
whether or not the line is paced, so the figure is what a real bus costs
(plus, on a real bus, the meters' own turnaround).  Run: ``python -m bench.scan``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Dict

from bench.common import sim_flags
from sdm.detect import DEFAULT_TURNAROUND, Scanner, device_list
from sdm.framing.rtu import RtuLink
from sdm.transport import comset
from sdm.transport.serial import SerialTransport
from tests.support import Simulator

METERS = "sdm630:1,janitza:26"
IDS = range(1, 248)
COMSET = 2            # 9600 8N1
TARGET_S = 20.0


def run() -> Dict[str, object]:
    flags = sim_flags(comset(COMSET))
    sim = Simulator(Path(tempfile.mkdtemp(prefix="sdm-bench-scan-")) / "tty", METERS, flags).start()
    line = SerialTransport(str(sim.link), comset(COMSET))
    try:
        line.open()
        started = time.monotonic()
        found = Scanner(RtuLink(line)).scan(IDS)
        seconds = time.monotonic() - started
    finally:
        line.close()
        sim.stop()
    return {"scan": {
        "ids": len(IDS),
        "line": str(comset(COMSET)),
        "turnaround_ms": DEFAULT_TURNAROUND * 1000,
        "simulator_paced": True,
        "meters": METERS,
        "found": device_list(found),
        "seconds": round(seconds, 2),
        "ms_per_id": round(1000 * seconds / len(IDS), 1),
        "target": f"full scan under {TARGET_S:g} s",
        "holds": seconds < TARGET_S and device_list(found) == METERS,
    }}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
