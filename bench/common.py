"""What the bench sections share: a paced simulator, the gateway's poller in-process, timers.

Processes come from tests/support.py (the same ones the end-to-end tests
start); every loop here stops by count or by a time limit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import gevent
from gevent.threadpool import ThreadPool

from sdm.bus import LoopSink, blocking_sleep
from sdm.framing.rtu import RtuLink
from sdm.hub import Hub, MeterConfig, MeterUpdate
from sdm.meters.registry import parse_device_list
from sdm.plan import Block, wire_time
from sdm.poller import Poller, PollSettings
from sdm.transport import Comset
from sdm.transport.serial import SerialTransport
from tests.support import Gateway, Simulator, http_request

BUS = "sdm630:1,sdm120:2,janitza:26"   # the three-meter bus of the figures
BAUD = 9600
SIMULATOR_NICE = -10


def comset(baud: int = BAUD, parity: str = "N") -> Comset:
    return Comset(baud, parity)


def sim_flags(line: Comset, turnaround_ms: float = 0.0) -> List[str]:
    return ["--baud", str(line.baud), "--parity", line.parity, "--turnaround-ms", str(turnaround_ms)]


@contextlib.contextmanager
def paced_simulator(devices: str, line: Comset, turnaround_ms: float = 0.0,
                    extra: Optional[List[str]] = None) -> Iterator[Simulator]:
    """Virtual meters on a pty that answer at the line rate; stopped on exit.

    The simulator stands in for meters, which have a CPU of their own: it runs
    at a raised priority (when allowed) so that a busy machine delays the
    gateway under test, not the meters' answers.
    """
    sim = Simulator(Path(tempfile.mkdtemp(prefix="sdm-bench-")) / "tty", devices,
                    sim_flags(line, turnaround_ms) + list(extra or []))
    try:
        sim.start()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, sim.proc.pid, SIMULATOR_NICE)
        yield sim
    finally:
        sim.stop()


@contextlib.contextmanager
def gateway(link: Path, devices: str, *extra: str, wait_values: bool = True) -> Iterator[Gateway]:
    """sdm630_httpd on a free loopback port; stopped on exit."""
    gw = Gateway(str(link), devices, list(extra), log_path=Path(f"{link}.httpd.log"))
    try:
        yield gw.start(wait_values=wait_values)
    finally:
        gw.stop()


def configs(devices: str) -> List[MeterConfig]:
    return [MeterConfig(slave, name, model, f"Instrument{slave}") for name, model, slave in parse_device_list(devices)]


@dataclass
class Readings:
    """Complete readings seen per meter, with the plan each meter read."""

    plans: Dict[int, List[Block]]
    times: Dict[int, List[float]] = field(default_factory=dict)

    def period(self, device_id: int) -> Optional[float]:
        """Seconds per complete reading in steady state (the first one, with the port opening, left out)."""
        times = self.times.get(device_id, [])
        if len(times) < 2:
            return None
        return (times[-1] - times[0]) / (len(times) - 1)


def poll_in_process(devices: str, line: Comset, link: Path, settings: PollSettings,
                    min_span: float, limit: float) -> Readings:
    """Run the gateway's poller on ``link`` until each meter has ``min_span`` s of readings after
    its first (at least two more), or ``limit`` s pass; the times of its complete readings."""
    meters = configs(devices)
    hub = Hub(meters)
    sink = LoopSink(hub)
    poller = Poller(sink, RtuLink(SerialTransport(str(link), line)), meters, settings, sleep=blocking_sleep)
    seen = Readings({reader.device_id: reader.blocks for reader in poller.readers})

    def on_update(event) -> None:
        if isinstance(event, MeterUpdate) and event.complete:
            seen.times.setdefault(event.device_id, []).append(time.monotonic())

    def enough() -> bool:
        return all(len(t := seen.times.get(d, [])) >= 3 and t[-1] - t[0] >= min_span for d in seen.plans)

    hub.subscribe(on_update)
    pool = ThreadPool(1)        # as in the gateway: the bus in a thread of its own
    task = pool.spawn(poller.run)
    end = time.monotonic() + limit
    while not enough() and time.monotonic() < end and not task.ready():
        gevent.sleep(0.05)
    poller.stop()
    task.wait(2)
    sink.close()
    pool.kill()
    return seen


def wire_ms(blocks: List[Block], line: Comset) -> float:
    return 1000.0 * wire_time(blocks, line.char_time)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: List[float], share: float) -> Optional[float]:
    """Nearest-rank percentile (``share`` 0-1) of the values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def memory_kib(pid: int) -> Dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def meter_status(port: int) -> Dict[int, dict]:
    """The /status entries of a one-bus gateway's meters, by id."""
    return {m["Id"]: m for m in http_request(port, "/status").json()["ConfiguredMeters"]}


def rounded(value: Optional[float], digits: int = 1) -> Optional[float]:
    return None if value is None else round(value, digits)
