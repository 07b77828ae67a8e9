"""Small scripted TCP servers on 127.0.0.1 for the transport and framing tests.

A :class:`FakeGateway` accepts connections and runs ``script(conn, index)``
on each (index 0 for the first connection), in a thread of its own.  Frames
are written by hand here (struct), never with the code under test.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Callable, List, Optional

from umodbus.client.serial.redundancy_check import add_crc

Script = Callable[[socket.socket, int], None]


class FakeGateway:
    def __init__(self, script: Script):
        self.script = script
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.requests: List[bytes] = []     # what the scripts read, in order
        self._conns: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, kind: str) -> str:
        return f"{kind}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            index, self.accepted = self.accepted, self.accepted + 1
            self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn, index), daemon=True).start()

    def _run(self, conn: socket.socket, index: int) -> None:
        try:
            self.script(conn, index)
        except OSError:
            pass

    def read(self, conn: socket.socket, size: int, timeout: float = 5.0) -> bytes:
        """Exactly ``size`` bytes from the client (fewer only if it goes away or goes quiet)."""
        conn.settimeout(timeout)
        data = b""
        while len(data) < size:
            try:
                chunk = conn.recv(size - len(data))
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        self.requests.append(data)
        return data

    def close(self) -> None:
        self.listener.close()
        for conn in self._conns:
            conn.close()


def hold_open(conn: socket.socket, seconds: float = 5.0) -> None:
    """Keep a connection open and read nothing more (a gateway that hangs)."""
    time.sleep(seconds)


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset instead of an orderly close."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def mbap(tid: int, unit: int, pdu: bytes, protocol: int = 0, length: Optional[int] = None) -> bytes:
    """An MBAP frame written out field by field."""
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1 if length is None else length, unit) + pdu


def mbap_registers(tid: int, unit: int, fc: int, words) -> bytes:
    return mbap(tid, unit, struct.pack(f">BB{len(words)}H", fc, 2 * len(words), *words))


def rtu_registers(slave: int, fc: int, words) -> bytes:
    return add_crc(struct.pack(f">BBB{len(words)}H", slave, fc, 2 * len(words), *words))


def request_tid(request: bytes) -> int:
    return struct.unpack(">H", request[:2])[0]
