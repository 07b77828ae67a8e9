"""HTTP under load while the gateway polls: wrk, 50 keep-alive connections, 10 s per route, 127.0.0.1 only.

The gateway polls the three-meter bus at 9600 8N1 throughout; the readings
it completes during the load show that polling went on.  wrk comes from
Debian's package (``make bench`` installs it when missing).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from typing import Callable, Dict, Tuple

from .common import BUS, comset, gateway, meter_status, paced_simulator

CONNECTIONS = 50
SECONDS = 10
THREADS = 1        # wrk's own threads: one core for wrk, the other for the gateway
ROUTES = ["/last/1", "/last"]
IDLE_SECONDS = 5

RATE_TARGET = 8000.0
P99_TARGET_MS = 15.0

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * UNITS[unit]


def parse_wrk(output: str) -> Dict[str, float]:
    """Requests per second, p50/p99 latency and failures from ``wrk --latency`` output."""
    found = {
        "requests per s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50 ms": milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),
        "p99 ms": milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),
    }
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    found["failed"] = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return found


def readings_per_s(port: int, work: Callable[[], object]) -> Tuple[float, object]:
    """Complete readings per second the gateway polled while ``work`` ran, and its result."""
    before, started = meter_status(port), time.monotonic()
    result = work()
    after, seconds = meter_status(port), time.monotonic() - started
    return sum(after[m]["CompleteReadings"] - before[m]["CompleteReadings"] for m in after) / seconds, result


def wrk(port: int, route: str) -> str:
    return subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", f"http://127.0.0.1:{port}{route}"],
        capture_output=True, text=True, timeout=SECONDS + 30, check=True).stdout


def load(port: int, route: str) -> Dict[str, object]:
    """One wrk run against 127.0.0.1, with the polling rate meanwhile."""
    rate, output = readings_per_s(port, lambda: wrk(port, route))
    return {"route": route, **parse_wrk(output), "bus readings per s meanwhile": round(rate, 2)}


def run() -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: `make bench` installs it (apt-get install wrk)")
    line = comset()
    with paced_simulator(BUS, line) as sim, gateway(sim.link, BUS) as gw:
        idle, _ = readings_per_s(gw.port, lambda: time.sleep(IDLE_SECONDS))
        rows = [load(gw.port, route) for route in ROUTES]
    one = rows[0]
    return {
        "load": f"wrk -t{THREADS} -c{CONNECTIONS} -d{SECONDS}s, keep-alive, while polling {BUS} at {line}",
        "bus readings per s without HTTP load": round(idle, 2),
        "routes": rows,
        "targets": [
            {"target": f"GET /last/1 at least {RATE_TARGET:,.0f} requests/s", "figure": one["requests per s"],
             "holds": one["requests per s"] >= RATE_TARGET and one["failed"] == 0},
            {"target": f"GET /last/1 p99 under {P99_TARGET_MS:g} ms", "figure": one["p99 ms"],
             "holds": one["p99 ms"] < P99_TARGET_MS},
        ],
    }
