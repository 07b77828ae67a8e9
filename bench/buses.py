"""Several buses in one process, and the TCP transports.

- **buses**: 8 buses (4 serial ptys, 2 transparent RTU-over-TCP gateways, 2 Modbus TCP gateways),
  4 meters each (SDM630, SDM120, Janitza, DZG), all paced at 9600 8N1 by simulators, polled by one
  ``sdm630_httpd --config``.  Each bus's complete readings per second are compared with those of
  the same kind of bus polled alone by a gateway of its own; CPU per value read and memory too.
- **tcp**: one SDM630 (no pause) behind a simulated gateway that adds a set latency per request:
  time per complete reading against the least the transport allows (the serial line's wire time
  of the planned requests plus the gateway's latency per request).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import gevent

from sdm.config import MeterConfig
from sdm.framing import make_link
from sdm.meters.registry import lookup
from sdm.plan import exchange_chars
from sdm.poller import MeterReader, PollSettings
from tests.support import Gateway, Process, free_port, http_request, python_cmd, wait_until

from .common import BAUD, SIMULATOR_NICE, comset, cpu_seconds, memory_kib, rounded

METERS = [("sdm630", 1), ("sdm120", 2), ("janitza", 26), ("dzg", 36)]
KINDS = ["serial"] * 4 + ["rtu+tcp"] * 2 + ["tcp"] * 2
ALONE_WINDOW = 20.0
ALL_WINDOW = 40.0
WARM_UP = 3.0
LATENCY_MS = 5.0
TCP_WINDOW = 15.0

RATIO_TARGET = 0.95
RSS_TARGET = 60.0


def simulator(folder: Path, index: int, kind: str, devices: str, latency_ms: float = 0.0) -> Tuple[Process, str]:
    """A paced simulator for one bus; the port a gateway reads it by."""
    flags = ["--baud", str(BAUD), "--seed", str(index)]
    if kind == "serial":
        link = folder / f"tty{index}"
        flags += ["--link", str(link)]
        port = str(link)
    else:
        tcp_port = free_port()
        flags += ["--rtu-tcp" if kind == "rtu+tcp" else "--tcp", f"127.0.0.1:{tcp_port}",
                  "--gateway-latency-ms", str(latency_ms)]
        port = f"{kind}://127.0.0.1:{tcp_port}"
    proc = Process(python_cmd("simulator", "-d", devices, *flags), folder / f"sim{index}.log")
    return proc, port


def bus_section(name: str, port: str, meters: List[Tuple[str, int]], pause_ms=None) -> str:
    lines = [f'[[bus]]\nname = "{name}"\nport = "{port}"\ntimeout = 0.5\n']
    for type_name, device_id in meters:
        lines.append(f'  [[bus.meter]]\n  type = "{type_name}"\n  id = {device_id}\n  name = "{name}-{device_id}"\n')
        if pause_ms is not None:
            lines.append(f"  pause = {pause_ms}\n")
    return "\n".join(lines)


@contextlib.contextmanager
def buses_running(kinds: List[str], meters=METERS, latency_ms: float = 0.0, pause_ms=None) -> Iterator[Gateway]:
    """Simulators for each bus and one gateway reading them all; stopped on exit."""
    folder = Path(tempfile.mkdtemp(prefix="sdm-bench-buses-"))
    devices = ",".join(f"{t}:{i}" for t, i in meters)
    sims, sections = [], []
    try:
        for index, kind in enumerate(kinds):
            proc, port = simulator(folder, index, kind, devices, latency_ms)
            proc.spawn()
            sims.append(proc)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, proc.proc.pid, SIMULATOR_NICE)
            sections.append(bus_section(f"bus{index}", port, meters, pause_ms))
        for proc in sims:
            wait_until(lambda proc=proc: "serving" in proc.log(), 15, what="a simulator")
        gw = Gateway.from_file("{http}\n" + "\n".join(sections), folder / "buses.toml")
        gw.spawn()
        wait_until(lambda: gw._answers() and all_read(gw), 30, what="every meter read")
        yield gw
        gw.stop()
    finally:
        for proc in sims:
            proc.stop()


def all_read(gw: Gateway) -> bool:
    return all(m["CompleteReadings"] > 0 for m in http_request(gw.port, "/status").json()["ConfiguredMeters"])


def snapshot(gw: Gateway) -> Dict[str, dict]:
    return {m["Name"]: m for m in http_request(gw.port, "/status").json()["ConfiguredMeters"]}


def measure(gw: Gateway, window: float) -> dict:
    """Complete readings per s per bus, CPU per value and memory over ``window`` seconds."""
    gevent.sleep(WARM_UP)
    before, cpu_before, started = snapshot(gw), cpu_seconds(gw.proc.pid), time.monotonic()
    gevent.sleep(window)
    after, cpu, seconds = snapshot(gw), cpu_seconds(gw.proc.pid) - cpu_before, time.monotonic() - started
    per_bus: Dict[str, float] = {}
    values = 0
    for name, meter in after.items():
        readings = meter["CompleteReadings"] - before[name]["CompleteReadings"]
        per_bus[meter["Bus"]] = per_bus.get(meter["Bus"], 0.0) + readings / seconds
        values += readings * len(lookup(meter["Type"]).registers)
    memory = memory_kib(gw.proc.pid)
    return {"per_bus": per_bus, "cpu_us_per_value": 1e6 * cpu / values if values else None,
            "rss_mb": memory["VmRSS"] / 1024, "errors": sum(m["Errors"] - before[m["Name"]]["Errors"]
                                                              for m in after.values())}


def run_buses() -> dict:
    alone = {}
    for kind in dict.fromkeys(KINDS):
        with buses_running([kind]) as gw:
            alone[kind] = measure(gw, ALONE_WINDOW)
    with buses_running(KINDS) as gw:
        together = measure(gw, ALL_WINDOW)
    rows = []
    for index, kind in enumerate(KINDS):
        rate = together["per_bus"][f"bus{index}"]
        rows.append({"bus": f"bus{index}", "transport": kind, "readings per s": round(rate, 2),
                     "alone": round(alone[kind]["per_bus"]["bus0"], 2),
                     "ratio": round(rate / alone[kind]["per_bus"]["bus0"], 3)})
    worst = min(row["ratio"] for row in rows)
    cpu_one = max(a["cpu_us_per_value"] for a in alone.values())
    return {
        "per bus (8 buses, 4 meters each, 9600 8N1)": rows,
        "worst ratio to alone": worst,
        "cpu us per value, 8 buses": rounded(together["cpu_us_per_value"]),
        "cpu us per value, one bus (worst kind)": rounded(cpu_one),
        "rss MB, 8 buses": rounded(together["rss_mb"]),
        "errors, 8 buses": together["errors"],
        "targets": [
            {"target": f"each bus >= {RATIO_TARGET} of its rate alone", "figure": worst,
             "holds": worst >= RATIO_TARGET},
            {"target": "CPU per value with 8 buses no higher than with one",
             "figure": rounded(together["cpu_us_per_value"]),
             "holds": together["cpu_us_per_value"] is not None and together["cpu_us_per_value"] <= cpu_one * 1.05},
            {"target": f"RSS with 8 buses < {RSS_TARGET:g} MB", "figure": rounded(together["rss_mb"]),
             "holds": together["rss_mb"] < RSS_TARGET},
        ],
    }


def least_per_reading(kind: str) -> Tuple[float, int]:
    """Seconds the transport needs at least for one complete SDM630 reading, and the requests:
    the bytes of the planned requests and replies at the serial line's rate behind the gateway,
    plus the gateway's latency per request (the silences between frames are the gateway's own
    business on its serial side, and no part of this minimum)."""
    line = comset()
    link = make_link(f"{kind}://127.0.0.1:1", line.baud, line.parity)
    config = MeterConfig(1, "SDM630", lookup("sdm630"), "m", pause=0.0)
    blocks = MeterReader(config, link.cost, PollSettings()).blocks
    return sum(exchange_chars(b) for b in blocks) * line.char_time + len(blocks) * LATENCY_MS / 1000, len(blocks)


def run_tcp() -> List[dict]:
    rows = []
    for kind in ("rtu+tcp", "tcp"):
        least, requests = least_per_reading(kind)
        with buses_running([kind], [("sdm630", 1)], LATENCY_MS, pause_ms=0) as gw:
            rate = measure(gw, TCP_WINDOW)["per_bus"]["bus0"]
        rows.append({"transport": kind, "gateway latency ms": LATENCY_MS, "requests": requests,
                     "ms per reading": round(1000 / rate, 1), "least ms": round(1000 * least, 1),
                     "ratio": round(least and (1 / rate) / least, 3)})
    return rows


def run() -> dict:
    return {"buses": run_buses(), "tcp (one SDM630, 9600 8N1 behind the gateway, no pause)": run_tcp()}
