"""sdm630_httpd on the three-meter bus (SDM630, SDM120, Janitza) at 9600 8N1, default pauses.

Start-up: time from starting the process until ``/last`` shows a first value,
and until each meter shows every value (median of a few starts).  Then one
run polls for a minute: complete readings per second for the whole bus, CPU
time per value read and the process's memory.
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List, Optional

import gevent

from sdm.plan import wire_time
from sdm.poller import MeterReader, PollSettings
from sdm.readings import LAYOUT
from sdm.transport import LineCost
from tests.support import Gateway, http_request

from .common import BUS, comset, configs, cpu_seconds, memory_kib, meter_status, paced_simulator

STARTS = 3
START_LIMIT = 10.0     # seconds one start may take to show every value
WINDOW = 60.0         # seconds of continuous polling for CPU and memory
WARM_UP = 2.0

FIRST_TARGET = 0.3
EVERY_TARGET = 1.0
CPU_TARGET = 3.0      # % of one core
RSS_TARGET = 45.0     # MB


def values_shown(reading: dict) -> int:
    """How many measurements a Readings object holds (non-null numbers)."""
    def count(node) -> int:
        if isinstance(node, dict):
            return sum(count(v) for v in node.values())
        return int(isinstance(node, (int, float)) and not isinstance(node, bool))
    return sum(count(reading.get(key)) for key, _ in LAYOUT)


def last_readings(port: int) -> Optional[List[dict]]:
    try:
        response = http_request(port, "/last", timeout=1)
    except OSError:
        return None
    return response.json() if response.status == 200 else None


def watch_start(gw: Gateway, wanted: Dict[int, int]) -> Dict[str, Optional[float]]:
    """Start the gateway; seconds until /last shows a first value, and each meter every value."""
    started = time.monotonic()
    gw.spawn()
    first: Optional[float] = None
    every: Dict[int, float] = {}
    while len(every) < len(wanted) and time.monotonic() - started < START_LIMIT:
        for reading in last_readings(gw.port) or []:
            shown, meter = values_shown(reading), reading["ModbusDeviceId"]
            now = time.monotonic() - started
            if shown and first is None:
                first = now
            if shown >= wanted[meter] and meter not in every:
                every[meter] = now
        gevent.sleep(0.005)
    found: Dict[str, Optional[float]] = {"first value": first}
    found.update({f"every value of meter {m}": every.get(m) for m in sorted(wanted)})
    found["every value of every meter"] = max(every.values()) if len(every) == len(wanted) else None
    return found


def poll_window(gw: Gateway, sim_pid: int, values_per_reading: Dict[int, int],
                wire_s: Dict[int, float]) -> Dict[str, object]:
    """CPU, memory and readings of a gateway that polls, over WINDOW seconds; ``wire_s`` is
    each meter's wire minimum per reading (to tell how busy the bus was)."""
    pid = gw.proc.pid
    before, cpu_before, t_before = meter_status(gw.port), cpu_seconds(pid), time.monotonic()
    sim_before = cpu_seconds(sim_pid)
    gevent.sleep(WINDOW)
    after, cpu_after, t_after = meter_status(gw.port), cpu_seconds(pid), time.monotonic()
    sim_cpu = cpu_seconds(sim_pid) - sim_before
    memory = memory_kib(pid)
    seconds, cpu = t_after - t_before, cpu_after - cpu_before
    readings = {m: after[m]["CompleteReadings"] - before[m]["CompleteReadings"] for m in before}
    values = sum(readings[m] * values_per_reading[m] for m in readings)
    return {
        "window_s": round(seconds, 1),
        "bus readings per s": round(sum(readings.values()) / seconds, 2),
        "readings per s by meter": ", ".join(f"{m}: {readings[m] / seconds:.2f}" for m in sorted(readings)),
        "wire busy %": round(100 * sum(readings[m] * wire_s[m] for m in readings) / seconds, 1),
        "requests per s": round(sum(after[m]["Requests"] - before[m]["Requests"] for m in after) / seconds, 1),
        "errors": sum(after[m]["Errors"] - before[m]["Errors"] for m in after),
        "values per s": round(values / seconds, 1),
        "cpu % of one core": round(100 * cpu / seconds, 2),
        "cpu us per value": round(1e6 * cpu / values, 1) if values else None,
        "rss MB": round(memory["VmRSS"] / 1024, 1),
        "peak rss MB": round(memory["VmHWM"] / 1024, 1),
        "simulator (pacing) cpu % of one core": round(100 * sim_cpu / seconds, 2),
    }


def median(runs: List[Dict[str, Optional[float]]], key: str) -> Optional[float]:
    found = [run[key] for run in runs]
    return None if None in found else round(statistics.median(found), 3)


def run() -> dict:
    line = comset()
    wanted = {cfg.device_id: len(cfg.model.registers) for cfg in configs(BUS)}
    cost = LineCost(line.char_time)
    wire_s = {cfg.device_id: wire_time(MeterReader(cfg, cost, PollSettings()).blocks, line.char_time)
              for cfg in configs(BUS)}
    starts = []
    with paced_simulator(BUS, line) as sim:
        for attempt in range(STARTS):
            gw = Gateway(str(sim.link), BUS, [], log_path=sim.link.with_suffix(f".httpd{attempt}.log"))
            try:
                starts.append(watch_start(gw, wanted))
                if attempt == STARTS - 1:
                    gevent.sleep(max(0.0, WARM_UP - starts[-1]["every value of every meter"]))
                    window = poll_window(gw, sim.proc.pid, wanted, wire_s)
            finally:
                gw.stop()
    start_up = [{"since process start (s)": key, "median": median(starts, key),
                 "worst": max((s[key] for s in starts if s[key] is not None), default=None)}
                for key in starts[0]]
    first, every = median(starts, "first value"), median(starts, "every value of every meter")
    return {
        "bus": f"{BUS} at {line}, default pauses",
        **window,
        "start-up": start_up,
        "targets": [
            {"target": f"bus polling under {CPU_TARGET} % of one core", "figure": window["cpu % of one core"],
             "holds": window["cpu % of one core"] < CPU_TARGET},
            {"target": f"bus polling under {RSS_TARGET:g} MB RSS", "figure": window["peak rss MB"],
             "holds": window["peak rss MB"] < RSS_TARGET},
            {"target": f"first value in /last within {FIRST_TARGET} s of start (median)", "figure": first,
             "holds": first is not None and first <= FIRST_TARGET},
            {"target": f"every value within {EVERY_TARGET:g} s of start (median, whole bus)", "figure": every,
             "holds": every is not None and every <= EVERY_TARGET},
        ],
    }
