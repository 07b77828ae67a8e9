"""Websocket fan-out: 1,000 clients on /ws of a gateway reading 3 simulated meters.

Figures: the gateway's RSS before and with the clients, and the delay from a
read (the frame's ``Timestamp``, stamped by the poller when the read is done)
to its arrival at the last of the clients, p50/p99 over every update of the
measuring window.  All on 127.0.0.1; every loop stops by count or by time.

The clients are raw sockets in one epoll loop of their own process: they read
whole chunks and only look for the newest ``"Timestamp":`` in each, so the
bench measures the gateway, not a JSON parser.
Run alone: ``python -m bench.ws_fanout [CLIENTS SECONDS]`` (or ``python bench/ws_fanout.py``).
"""

import base64
import bisect
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import memory_kib, percentile, sim_flags  # noqa: E402
from sdm.transport import comset  # noqa: E402
from tests.support import Gateway, Simulator, wait_until  # noqa: E402

DEVICES = "sdm630:1,sdm120:2,janitza:26"
CLIENTS = 1000
WINDOW = 20.0           # seconds of measuring
SETTLE = 3.0            # updates of the window's last seconds may still be on their way
STAMP = re.compile(rb'"Timestamp":(\d+)\}')
TAIL = 64               # bytes kept from the previous chunk, for a stamp cut in two


class Listener:
    """One raw websocket client: arrival times of the newest stamp it has seen."""

    seen: Set[bytes] = set()      # every stamp any client saw: the updates to time

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        self.times: List[float] = []
        self.stamps: List[int] = []
        self.tail = b""
        self.upgraded = False
        self.ended = False

    def feed(self, chunk: bytes, now: float) -> None:
        if not self.upgraded:
            head, sep, chunk = (self.tail + chunk).partition(b"\r\n\r\n")
            self.upgraded = bool(sep)
            self.tail = b"" if sep else head
            if not sep:
                return
        found = STAMP.findall(self.tail + chunk)
        if found:
            Listener.seen.update(found)
            stamp = int(found[-1])
            if not self.stamps or stamp > self.stamps[-1]:
                self.times.append(now)
                self.stamps.append(stamp)
        self.tail = chunk[-TAIL:]

    def arrival(self, stamp: int) -> float:
        """When the update stamped ``stamp`` (or a later one) had arrived; inf if never."""
        index = bisect.bisect_left(self.stamps, stamp)
        return self.times[index] if index < len(self.times) else float("inf")


def listen(port: int, clients: int, seconds: float) -> Dict[str, object]:
    """Client side, in its own process without gevent: one epoll loop over every socket."""
    listeners = [Listener(port) for _ in range(clients)]
    selector = selectors.DefaultSelector()
    for listener in listeners:
        listener.sock.setblocking(False)
        selector.register(listener.sock, selectors.EVENT_READ, listener)
    started = time.time()
    until = time.monotonic() + seconds
    while time.monotonic() < until and len(selector.get_map()):
        for key, _ in selector.select(timeout=0.5):
            try:
                chunk = key.fileobj.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                key.data.feed(chunk, time.time())
            else:
                key.data.ended = True
                selector.unregister(key.fileobj)
    first, last = int((started + SETTLE) * 1000), int((time.time() - SETTLE) * 1000)
    stamps = sorted(s for s in map(int, Listener.seen) if first <= s <= last)
    delays = [max(listener.arrival(stamp) for listener in listeners) - stamp / 1000 for stamp in stamps]
    return {"stamps": len(stamps), "seconds": (last - first) / 1000,
            "delays": [d for d in delays if d != float("inf")],
            "dropped": sum(listener.ended for listener in listeners)}


def request_rate(gw: Gateway, seconds: float) -> float:
    """Modbus requests per second the gateway's poller made over ``seconds``."""
    before = gw.get("/status").json()["Modbus"]["TotalModbusRequests"]
    time.sleep(seconds)
    after = gw.get("/status").json()["Modbus"]["TotalModbusRequests"]
    return round((after - before) / seconds, 1)


def raise_file_limit(needed: int) -> None:
    """The gateway inherits it: it needs a descriptor per client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def measure(gw: Gateway, clients: int, window: float) -> Dict[str, object]:
    pid = gw.proc.pid
    idle = memory_kib(pid)["VmRSS"]
    idle_rate = request_rate(gw, 3.0)
    seconds = SETTLE + window + SETTLE
    client = subprocess.Popen([sys.executable, __file__, "--listen", str(gw.port), str(clients), str(seconds)],
                              stdout=subprocess.PIPE, cwd=ROOT)
    time.sleep(SETTLE)
    busy_rate = request_rate(gw, window / 2)
    busy = memory_kib(pid)
    out, _ = client.communicate(timeout=seconds + 120)
    seen = json.loads(out)
    delays = seen["delays"]
    return {
        "clients": clients,
        "updates timed": seen["stamps"],
        "updates per s": round(seen["stamps"] / seen["seconds"], 1),
        "bus requests per s without clients": idle_rate,
        "bus requests per s with clients": busy_rate,
        "clients dropped": seen["dropped"],
        "updates missed by some client": seen["stamps"] - len(delays),
        "gateway RSS idle MB": round(idle / 1024, 1),
        f"gateway RSS with {clients} clients MB": round(busy["VmRSS"] / 1024, 1),
        "gateway peak RSS MB": round(memory_kib(pid)["VmHWM"] / 1024, 1),
        "delay to last client p50 ms": round(percentile(delays, 0.50) * 1000, 1) if delays else None,
        "delay to last client p99 ms": round(percentile(delays, 0.99) * 1000, 1) if delays else None,
        "delay to last client max ms": round(max(delays) * 1000, 1) if delays else None,
    }


def run(clients: int = CLIENTS, window: float = WINDOW) -> Dict[str, object]:
    """Start the simulator and the gateway, measure, stop both; the figures as a dict."""
    raise_file_limit(clients + 200)
    workdir = Path(tempfile.mkdtemp(prefix="sdm-bench-ws-"))
    sim = Simulator(workdir / "tty", DEVICES, sim_flags(comset(2)))
    # the default cap (200 websocket clients) would refuse most of them
    gw = Gateway(str(sim.link), DEVICES, ["--max-ws-clients", str(clients + 10)], log_path=workdir / "httpd.log")
    try:
        sim.start()
        gw.start()
        wait_until(lambda: gw.get("/status").json()["UptimeSeconds"] > 2, 10, what="the gateway settled")
        figures = {"bus": f"{DEVICES}, 9600 8N1 paced",
                   **measure(gw, clients, window)}
        figures["frames per update (mean)"] = frames_per_update(gw)
        return figures
    finally:
        gw.stop()
        sim.stop()


def frames_per_update(gw: Gateway) -> float:
    """Measurement frames one update carries on average (from the firehose, one poll)."""
    events = gw.get("/firehose?timeout=10&category=meterupdate&since_time=0", timeout=20).json()["events"]
    return round(len(events) / max(1, len({e["timestamp"] for e in events})), 1)


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--listen"]:
        print(json.dumps(listen(int(args[1]), int(args[2]), float(args[3]))))
        return {}
    figures = run(*(int(args[0]), float(args[1])) if len(args) == 2 else ())
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")
    return figures


if __name__ == "__main__":
    main()
