"""Sharing a meter: answer times of the served units, polling with and without clients, listen-mode CPU.

An SDM630 on a paced pty at 9600 8N1 is polled by sdm630_httpd, which serves
it over Modbus TCP and as an RTU slave on two more lines: the simulator's
virtual multi-drop bus at 9600 (the line costs its real time) and a bare pty
pair set to 9600 (no wire time).  The load comes from separate processes
(``python -m bench.share load ...``, no gevent): 20 Modbus TCP clients on one
select loop, each asking for 18 registers every 50 ms, and an inverter-like RTU
master at 14 requests a second on each RTU line.

- TCP: round trip as the client sees it (send to reply read), loopback.
- RTU on the pty pair: the issue's figure.  The request arrives at once and
  the reply leaves at once, so the round trip less the 3.5-character silence
  the slave keeps before answering is the slave's own delay after it.
- RTU through the virtual bus: how much later than the ideal the reply is
  complete, the ideal being the request's wire time, the silence and the
  reply's wire time.  It adds the virtual wire's own delay (a Python thread
  handing each chunk over when its last character has crossed).
- Polling: complete readings of the real meter per second, without and with
  the load (the served answers must not slow it).
- Listen mode: the gateway's CPU time per value it decoded from a foreign
  master's exchanges (the virtual bus with ``--master sdm630:1@14``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path
from typing import Dict, List

from sdm.transport import silence_time

from .common import SIMULATOR_NICE, comset, cpu_seconds, paced_simulator, percentile, rounded

WINDOW = 15.0          # seconds per measured phase
TCP_CLIENTS = 20
TCP_PERIOD = 0.05
RTU_RATE = 14.0
ANSWER_TARGET_MS = 5.0
SLOWDOWN_TARGET = 0.05  # polling may lose at most this share under the load


def read_pdu(start: int, count: int) -> bytes:
    return struct.pack(">BHH", 4, start, count)


def tcp_clients(port: int, until: float) -> Dict[str, list]:
    """TCP_CLIENTS connections served by one thread (select), each asking every TCP_PERIOD s:
    one thread keeps the client's own scheduling out of the figures."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(TCP_CLIENTS)]
    sent_at: Dict[socket.socket, float] = {}
    due = {sock: time.monotonic() + index * TCP_PERIOD / TCP_CLIENTS for index, sock in enumerate(socks)}
    replies: Dict[socket.socket, bytes] = {sock: b"" for sock in socks}
    rtts: List[float] = []
    errors: List[str] = []
    request = struct.pack(">HHHB", 1, 0, 6, 1) + read_pdu(0, 18)
    while time.monotonic() < until:
        now = time.monotonic()
        for sock in socks:
            if sock not in sent_at and now >= due[sock]:
                sent_at[sock] = time.monotonic()
                sock.sendall(request)
        wake = min([due[s] for s in socks if s not in sent_at] + [now + 0.01])
        for sock in select.select(list(sent_at), [], [], max(0.0, wake - time.monotonic()))[0]:
            replies[sock] += sock.recv(512)
            if len(replies[sock]) >= 9 + 36 or (len(replies[sock]) >= 9 and replies[sock][7] & 0x80):
                rtts.append(time.monotonic() - sent_at.pop(sock))
                if replies[sock][7] & 0x80:
                    errors.append(f"exception {replies[sock][8]}")
                replies[sock] = b""
                due[sock] += TCP_PERIOD
    for sock in socks:
        sock.close()
    return {"tcp": rtts, "errors": errors}


def rtu_master(target: str, until: float) -> Dict[str, list]:
    """An inverter-like master on a served RTU line; how late each reply was complete.

    ``target`` is the virtual bus's endpoint (a path: the wire costs its time at 9600) or
    ``fd:N``, the master side of a pty pair (no wire time: what is left is the silence the
    slave keeps before answering, and its own delay)."""
    from sdm.framing.rtu import build_request, crc_ok
    late: List[float] = []
    errors: List[str] = []
    char = 10 / 9600
    if target.startswith("fd:"):
        fd, wire = int(target[3:]), 0.0
    else:
        fd, wire = os.open(target, os.O_RDWR | os.O_NOCTTY), (8 + 41) * char
        tty.setraw(fd)
    key = "rtu pty" if target.startswith("fd:") else "rtu"
    due = time.monotonic()
    while time.monotonic() < until:
        request = build_request(1, 4, 0, 18)
        sent = time.monotonic()
        os.write(fd, request)
        reply = b""
        while len(reply) < 41 and time.monotonic() < sent + 0.5:
            if select.select([fd], [], [], 0.5)[0]:
                reply += os.read(fd, 256)
        if len(reply) != 41 or not crc_ok(reply):
            errors.append(f"reply of {len(reply)} bytes")
        else:
            late.append(time.monotonic() - sent - wire - silence_time(char))
        due += 1 / RTU_RATE
        time.sleep(max(0.0, due - time.monotonic()))
    os.close(fd)
    return {key: late, "errors": errors}


def load(kind: str, target: str, seconds: float) -> Dict[str, list]:
    """One client side, in a process of its own (``python -m bench.share load KIND TARGET SECONDS``)."""
    until = time.monotonic() + seconds
    return tcp_clients(int(target), until) if kind == "tcp" else rtu_master(target, until)


def load_process(kind: str, target: str, pass_fds=(), seconds: float = WINDOW) -> subprocess.Popen:
    """A client side in its own process.  The RTU master is a measuring instrument, like the
    simulated meters: it runs at their raised priority where allowed, so that the time it takes
    to notice a reply on a busy machine is not counted as the slave's."""
    def instrument() -> None:
        if kind == "rtu":
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, SIMULATOR_NICE)
    return subprocess.Popen([sys.executable, "-m", "bench.share", "load", kind, target, str(seconds)],
                            stdout=subprocess.PIPE, pass_fds=pass_fds, cwd=Path(__file__).resolve().parent.parent,
                            preexec_fn=instrument)


def raised(sim):
    """The virtual bus is the measuring instrument: like the paced meters, it runs at a raised
    priority where allowed, so a busy machine delays the gateway rather than the wire."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, sim.proc.pid, SIMULATOR_NICE)
    return sim


def readings(port: int) -> int:
    from tests.support import http_request
    return http_request(port, "/status").json()["ConfiguredMeters"][0]["CompleteReadings"]


def polling_rate(port: int, seconds: float) -> float:
    before, began = readings(port), time.monotonic()
    time.sleep(seconds)
    return (readings(port) - before) / (time.monotonic() - began)


def ms(values: List[float], share: float):
    found = percentile(values, share)
    return None if found is None else rounded(1000 * found, 2)


def served_run(tmp: Path) -> Dict[str, object]:
    from tests.support import Gateway, Simulator, free_port
    line = comset()
    with paced_simulator("sdm630:1", line) as meter:
        rs485 = raised(Simulator(tmp / "rs485", "sdm120:200", ["--bus-endpoints", "2", "--baud", "9600"]).start())
        tcp_port = free_port()
        pty_master, pty_slave = os.openpty()      # the slave side stays open: no EIO before sdm opens it
        gw = Gateway.from_file(f"""{{http}}
[[bus]]
name = "cabinet"
port = "{meter.link}"
  [[bus.meter]]
  type = "sdm630"
  id = 1
  pause = 20        # fixed: learning would speed the polling up between the two windows
[[serve]]
listen = "127.0.0.1:{tcp_port}"
max_connections = 32
[[serve]]
port = "{tmp / 'rs485'}.2"
[[serve]]
port = "{os.ttyname(pty_slave)}"
baud = 9600
""", tmp / "gw.toml")
        try:
            gw.start()
            time.sleep(2.0)
            alone = polling_rate(gw.port, WINDOW)
            clients = [load_process("tcp", str(tcp_port)), load_process("rtu", str(tmp / "rs485")),
                       load_process("rtu", f"fd:{pty_master}", pass_fds=(pty_master,))]
            loaded = polling_rate(gw.port, WINDOW)
            seen = {"errors": []}
            for client in clients:
                for key, found in json.loads(client.communicate(timeout=WINDOW + 30)[0]).items():
                    seen[key] = seen.get(key, []) + found
        finally:
            gw.stop()
            rs485.stop()
            os.close(pty_master)
            os.close(pty_slave)
    return {"alone": alone, "loaded": loaded, **seen}


def listen_run(tmp: Path) -> Dict[str, object]:
    from tests.support import Gateway, Simulator
    link = tmp / "inverter"
    sim = raised(Simulator(link, "sdm630:1", ["--bus-endpoints", "2", "--baud", "9600", "--master", "sdm630:1@14"])
                 .start())
    gw = Gateway.from_file(f"""{{http}}
[[bus]]
name = "inverter"
port = "{link}"
mode = "listen"
  [[bus.meter]]
  type = "sdm630"
  id = 1
""", tmp / "listen.toml")
    try:
        gw.start()
        time.sleep(2.0)

        def decoded() -> int:
            return gw.get("/status").json()["Buses"][0]["Listen"]["DecodedValues"]

        values, cpu = decoded(), cpu_seconds(gw.proc.pid)
        time.sleep(WINDOW)
        values, cpu = decoded() - values, cpu_seconds(gw.proc.pid) - cpu
    finally:
        gw.stop()
        sim.stop()
    return {"values": values, "cpu": cpu}


def run() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sdm-bench-share-"))
    served = served_run(tmp)
    heard = listen_run(tmp)
    tcp, rtu, pty = served["tcp"], served["rtu"], served["rtu pty"]
    slowdown = 1 - served["loaded"] / served["alone"] if served["alone"] else None
    per_value_us = 1e6 * heard["cpu"] / heard["values"] if heard["values"] else None
    return {
        "setup": f"SDM630 polled at 9600 8N1; {TCP_CLIENTS} TCP clients every {TCP_PERIOD * 1000:g} ms, "
                 f"an RTU master at {RTU_RATE:g} Hz on each served RTU line (virtual 9600 bus, pty pair); "
                 f"{WINDOW:g} s windows",
        "answer times": [
            {"server": "Modbus TCP, round trip (ms)", "requests": len(tcp), "p50": ms(tcp, 0.5),
             "p99": ms(tcp, 0.99), "max": ms(tcp, 1.0)},
            {"server": "RTU slave on a pty pair, beyond the silence (ms)", "requests": len(pty),
             "p50": ms(pty, 0.5), "p99": ms(pty, 0.99), "max": ms(pty, 1.0)},
            {"server": "RTU slave through the virtual 9600 bus, beyond the ideal (ms)", "requests": len(rtu),
             "p50": ms(rtu, 0.5), "p99": ms(rtu, 0.99), "max": ms(rtu, 1.0)},
        ],
        "client errors": len(served["errors"]),
        "complete readings per s, alone": rounded(served["alone"], 2),
        "complete readings per s, with the clients": rounded(served["loaded"], 2),
        "listen mode": {"values decoded": heard["values"], "cpu % of one core": rounded(100 * heard["cpu"] / WINDOW, 2),
                        "cpu per decoded value (us)": rounded(per_value_us, 1)},
        "targets": [
            {"target": f"TCP answers within {ANSWER_TARGET_MS:g} ms p99 with {TCP_CLIENTS} clients",
             "figure": ms(tcp, 0.99), "holds": bool(tcp) and ms(tcp, 0.99) <= ANSWER_TARGET_MS},
            {"target": f"RTU answers within {ANSWER_TARGET_MS:g} ms p99 after the silence",
             "figure": ms(pty, 0.99), "holds": bool(pty) and ms(pty, 0.99) <= ANSWER_TARGET_MS},
            {"target": f"polling loses under {SLOWDOWN_TARGET:.0%} with the clients",
             "figure": rounded(slowdown, 3), "holds": slowdown is not None and slowdown < SLOWDOWN_TARGET},
        ],
    }


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "load":
    print(json.dumps(load(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
