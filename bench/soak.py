"""Soak: a long run at full poll speed on a faulty bus, with 100 websocket clients and a firehose client.

Three simulated meters (SDM630, SDM120, Janitza) on an unpaced pty with 2 %
of the requests faulted (every fault kind, simulator/faults.py), the gateway
without pauses, 100 websocket clients (raw sockets that read whole chunks and
ping now and then, so the bench measures the gateway, not a JSON parser) and
one firehose client following ``since_time``.  Figures: requests served,
errors by kind (and whether they equal what the simulator injected), the
gateway's RSS and open file descriptors after the warm-up and at the end (and
the RSS peak in between), clients still connected, and the time SIGTERM takes
to end it all.  Every loop stops by time; everything runs on 127.0.0.1.

Run alone: ``python bench/soak.py [SECONDS]`` (default 600).
"""

from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import gevent  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import memory_kib  # noqa: E402
from sdm.framing.rtu import ERROR_KINDS  # noqa: E402
from tests.support import Gateway, Simulator, expected_errors, http_request  # noqa: E402

DEVICES = "sdm630:1,sdm120:2,janitza:26"
FULL_SPEED = [arg for name in ("sdm630", "sdm120", "janitza") for arg in ("--pause", f"{name}=0")]
FAULTS = "all=0.02"
WS_CLIENTS = 100
DURATION = 600.0
WARM_UP = 10.0
SAMPLE_EVERY = 10.0
CLIENT_PING = 20.0          # s between a client's pings (the gateway drops clients silent for 60 s)
SETTLED = 60.0              # s into the run by which the bounded buffers (firehose: 30,000 events) are full
RSS_GROWTH_TARGET = 0.10    # at most 10 % more resident memory at the end than once the buffers are full
FD_SLACK = 2                # descriptors of connections that come and go (a firehose poll, a /status)


def rss_kib(pid: int) -> int:
    return memory_kib(pid)["VmRSS"]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class RawWsClient:
    """A websocket client that only counts what it receives, in chunks, and pings to stay alive."""

    PING = b"\x89\x80" + b"\x00\x00\x00\x00"     # masked, empty client ping

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"websocket refused: {head[:80]!r}")
        self.received = len(head.split(b"\r\n\r\n", 1)[1])
        self.open = True

    def run(self, until: float) -> None:
        next_ping = time.monotonic() + CLIENT_PING
        try:
            while time.monotonic() < until:
                self.sock.settimeout(max(0.1, min(next_ping, until) - time.monotonic()))
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    chunk = None
                if chunk == b"":
                    self.open = False
                    return
                self.received += len(chunk or b"")
                if time.monotonic() >= next_ping:
                    self.sock.sendall(self.PING)
                    next_ping = time.monotonic() + CLIENT_PING
        except OSError:
            self.open = False


def follow_firehose(port: int, until: float, counts: Dict[str, int]) -> None:
    since = int(time.time() * 1000)
    while time.monotonic() < until:
        resp = http_request(port, f"/firehose?timeout=5&category=all&since_time={since}", timeout=30)
        counts[str(resp.status)] = counts.get(str(resp.status), 0) + 1
        for event in resp.json().get("events", []):
            counts["events"] = counts.get("events", 0) + 1
            since = max(since, event["timestamp"])


def injected(served_log: Path, total: int) -> Dict[str, int]:
    """Error counts by kind that the first ``total`` requests of the served log stand for."""
    requests: List[Dict[str, Any]] = []
    with open(served_log, encoding="utf-8") as log:
        for line in log:
            if len(requests) == total:
                break
            record = json.loads(line)
            if "outcome" in record:
                requests.append(record)
    counts = expected_errors(requests)
    return {kind: counts.get(kind, 0) for kind in ERROR_KINDS}


def run(duration: float = DURATION) -> Dict[str, Any]:
    """Soak for ``duration`` seconds (after a warm-up); the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="sdm-soak-") as tmp:
        served_log = Path(tmp) / "served.jsonl"
        sim = Simulator(Path(tmp) / "tty", DEVICES, ["--faults", FAULTS, "--served-log", str(served_log)]).start()
        gw = Gateway(str(sim.link), DEVICES, FULL_SPEED, log_path=Path(tmp) / "httpd.log")
        try:
            return soak(gw.start(), served_log, duration)
        finally:
            gw.stop()
            sim.stop()


def soak(gw: Gateway, served_log: Path, duration: float) -> Dict[str, Any]:
    pid = gw.proc.pid
    clients = [RawWsClient(gw.port) for _ in range(WS_CLIENTS)]
    started = time.monotonic()
    until = started + WARM_UP + duration
    firehose: Dict[str, int] = {}
    workers = [gevent.spawn(client.run, until) for client in clients]
    workers.append(gevent.spawn(follow_firehose, gw.port, until, firehose))
    gevent.sleep(WARM_UP)
    first = http_request(gw.port, "/status").json()["Modbus"]["TotalModbusRequests"]
    rss_start, fds_start = rss_kib(pid), open_fds(pid)
    rss_peak = rss_start
    settled_at = started + WARM_UP + min(SETTLED, duration / 2)
    rss_settled = None
    last_answers: Dict[str, int] = {}
    while time.monotonic() < until:
        gevent.sleep(min(SAMPLE_EVERY, max(0.0, until - time.monotonic())))
        rss_peak = max(rss_peak, rss_kib(pid))
        if rss_settled is None and time.monotonic() >= settled_at:
            rss_settled = rss_kib(pid)
        answer = str(http_request(gw.port, "/last/1", timeout=5).status)
        last_answers[answer] = last_answers.get(answer, 0) + 1
    status = http_request(gw.port, "/status").json()
    rss_end, fds_end = rss_kib(pid), open_fds(pid)
    rss_settled = rss_settled or rss_end
    connected = sum(client.open for client in clients)
    signalled = time.monotonic()
    gw.signal(signal.SIGTERM)
    code = gw.proc.wait(10)
    stop_s = time.monotonic() - signalled
    gevent.joinall(workers, timeout=10)
    for client in clients:
        client.sock.close()

    modbus = status["Modbus"]
    counted = modbus["ErrorsByKind"]
    expected = injected(served_log, modbus["TotalModbusRequests"])
    return {
        "duration_s": round(duration, 1),
        "requests": modbus["TotalModbusRequests"],
        "requests_per_s": round((modbus["TotalModbusRequests"] - first) / duration, 1),
        "errors": modbus["TotalModbusErrors"],
        "errors_by_kind": [{"kind": kind, "counted": counted[kind], "injected": expected[kind]}
                           for kind in ERROR_KINDS],
        "rss_start_mb": round(rss_start / 1024, 1),
        "rss_settled_mb": round(rss_settled / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1),
        "rss_peak_mb": round(rss_peak / 1024, 1),
        "fds_start": fds_start,
        "fds_end": fds_end,
        "ws_clients_connected_at_end": connected,
        "ws_mb_received": round(sum(c.received for c in clients) / 1e6, 1),
        "firehose_polls": sum(v for k, v in firehose.items() if k != "events"),
        "firehose_events": firehose.get("events", 0),
        "sigterm_exit_code": code,
        "sigterm_exit_s": round(stop_s, 2),
        "last_1_answers": str(last_answers),
        "targets": [
            {"target": "errors by kind = injected faults", "figure": str(counted), "holds": counted == expected},
            {"target": f"RSS growth once the buffers are full <= {RSS_GROWTH_TARGET:.0%}",
             "figure": f"{rss_settled} -> {rss_end} KiB", "holds": rss_end <= rss_settled * (1 + RSS_GROWTH_TARGET)},
            {"target": "open fds: no growth", "figure": f"{fds_start} -> {fds_end}",
             "holds": fds_end <= fds_start + FD_SLACK},
            {"target": f"{WS_CLIENTS} websocket clients stay connected", "figure": connected,
             "holds": connected == WS_CLIENTS},
            {"target": "firehose polls all answered 200", "figure": str(firehose),
             "holds": set(firehose) <= {"200", "events"}},
            {"target": "/last/1 answers 200 or 503 throughout", "figure": str(last_answers),
             "holds": set(last_answers) <= {"200", "503"}},
            {"target": "SIGTERM: exit 0 within 2 s", "figure": f"{code} in {stop_s:.2f} s",
             "holds": code == 0 and stop_s < 2.0},
        ],
    }


if __name__ == "__main__":
    figures = run(float(sys.argv[1]) if len(sys.argv) > 1 else DURATION)
    print(json.dumps(figures, indent=2))
