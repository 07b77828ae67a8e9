"""The hostile load of issue 11, as a process of its own: ``python -m bench.hostile_load PORT KIND... -s S``.

Kinds (each bounded in connections and in time, loopback only):

- ``ws``: one client floods a websocket with masked text frames as fast as the socket takes them, and
  connects again whenever the gateway closes it;
- ``slow``: a few hundred connections each send a request head one byte at a time, reconnecting
  when the gateway gives up on them;
- ``http``: twenty keep-alive clients fetch ``/metrics`` and ``/minuteavg`` in turn, without pause.

It runs in a separate process so that its own work competes with the gateway for the CPU as a
real attacker's would, while the measuring side (the test or bench) stays idle. At the end it
prints one JSON line with what each kind managed to do.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Callable, Dict, List  # noqa: E402

import gevent  # noqa: E402

KINDS = ("ws", "slow", "http")
SLOW_CONNECTIONS = 300
SLOW_BYTE_INTERVAL = 1.0        # s between two bytes of one slow connection
HTTP_CLIENTS = 20
HTTP_ROUTES = ("/metrics", "/minuteavg")
WS_PAYLOAD = b"x" * 100         # one flood frame's text
WS_BURST = 64                   # frames per send of the flood
HEAD = b"GET /last/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"


def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One client-to-server frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    length = len(payload)
    head = bytes([0x80 | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_handshake(port: int, path: str = "/ws", origin: str = "") -> socket.socket:
    """A connected websocket (the 101 read), or OSError."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Origin: {origin}\r\n" if origin else ""
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"{extra}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1"))
    return sock


def drain(sock: socket.socket) -> None:
    """Read and drop what the gateway sends, until it closes."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def ws_flood(port: int, end: float, done: Counter) -> None:
    burst = masked_frame(WS_PAYLOAD) * WS_BURST
    while time.monotonic() < end:
        try:
            sock = ws_handshake(port)
        except OSError:
            done["ws refused"] += 1
            gevent.sleep(0.05)
            continue
        done["ws connections"] += 1
        reader = gevent.spawn(drain, sock)
        try:
            while time.monotonic() < end:
                sock.sendall(burst)
                done["ws frames sent"] += WS_BURST
        except OSError:
            done["ws closed by the gateway"] += 1
        finally:
            reader.kill()
            sock.close()


def slow_head(port: int, end: float, done: Counter) -> None:
    while time.monotonic() < end:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            done["slow connect failed"] += 1
            gevent.sleep(0.5)
            continue
        done["slow connections"] += 1
        try:
            for byte in HEAD:
                if time.monotonic() >= end:
                    break
                sock.sendall(bytes([byte]))
                done["slow bytes"] += 1
                gevent.sleep(SLOW_BYTE_INTERVAL)
            else:
                done["slow heads completed"] += 1
        except OSError:
            done["slow cut by the gateway"] += 1
        finally:
            sock.close()


def http_loop(port: int, end: float, done: Counter) -> None:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    number = 0
    while time.monotonic() < end:
        route = HTTP_ROUTES[number % len(HTTP_ROUTES)]
        number += 1
        try:
            conn.request("GET", route)
            response = conn.getresponse()
            response.read()
            done[f"http {response.status}"] += 1
        except (OSError, http.client.HTTPException):
            done["http failed"] += 1
            conn.close()
            gevent.sleep(0.05)
    conn.close()


WORKERS: Dict[str, Callable[[int, float, Counter], None]] = {"ws": ws_flood, "slow": slow_head, "http": http_loop}
COUNTS = {"ws": 1, "slow": SLOW_CONNECTIONS, "http": HTTP_CLIENTS}


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(prog="bench.hostile_load", description=__doc__.split("\n")[0])
    p.add_argument("port", type=int)
    p.add_argument("kinds", nargs="+", choices=KINDS)
    p.add_argument("-s", "--seconds", type=float, default=5.0)
    p.add_argument("--slow", type=int, default=SLOW_CONNECTIONS, help="connections of the slow kind")
    args = p.parse_args(argv)
    end = time.monotonic() + args.seconds
    done: Counter = Counter()
    counts = {**COUNTS, "slow": args.slow}
    workers = [gevent.spawn(WORKERS[kind], args.port, end, done)
               for kind in args.kinds for _ in range(counts[kind])]
    gevent.joinall(workers, timeout=args.seconds + 10)
    gevent.killall(workers, timeout=2)
    print(json.dumps(dict(done)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
