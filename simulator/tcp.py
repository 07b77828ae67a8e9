"""The simulator as a network gateway: Modbus TCP (``--tcp``) and transparent RTU over TCP (``--rtu-tcp``).

Each accepted connection is served in a thread of its own, by the same
virtual meters and fault injector as the pty (one lock between them: one
serial bus behind every door).

- A transparent gateway passes RTU frames both ways: a connection is a line
  for a :class:`SlaveLoop`, exactly like the pty, paced at the serial line's
  rate when ``--baud`` is given.
- A Modbus TCP gateway takes MBAP frames, asks the meter in RTU on its
  serial side and answers in MBAP once the meter's reply is complete.  A
  reply it cannot use (bad CRC, cut short, garbage, another slave's, two
  frames run together) is dropped: the client sees a timeout, as behind
  most real gateways (some answer exception 11 instead; not modelled).
  A header that is not Modbus TCP makes it close the connection.

``--gateway-latency-ms`` delays every reply of either kind: the gateway's
own forwarding time, on top of the serial line's.
"""

from __future__ import annotations

import dataclasses
import logging
import select
import socket
import threading
import time
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Tuple

from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing.mbap import HEADER, HEADER_BYTES, MAX_LENGTH
from sdm.framing.rtu import EXCEPTION_BYTES, REPLY_OVERHEAD, crc_ok
from sdm.transport.tcp import parse_address

from .line import ByteLine
from .meters import VirtualMeter
from .pacing import Pacing, paced
from .server import Disturb, SlaveLoop
from .timing import Tempers

log = logging.getLogger(__name__)

READ_PDU_BYTES = 5        # function code, start address (2), count (2)
POLL = 0.2                # seconds between looks at the stop flag


class ConnectionClosed(Exception):
    """The client went away (or the socket failed): this connection's thread ends."""


class NotModbusTcp(Exception):
    """A frame header that is no MBAP header: a gateway drops such a connection."""


class SocketLine:
    """One accepted connection with the pty's interface: read(timeout) and write(data)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def read(self, timeout: Optional[float]) -> bytes:
        """Whatever the client sent, or b'' when nothing came within ``timeout``."""
        if not select.select([self.sock], [], [], timeout)[0]:
            return b""
        try:
            data = self.sock.recv(4096)
        except OSError as err:
            raise ConnectionClosed(str(err)) from err
        if not data:
            raise ConnectionClosed("closed by the client")
        return data

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise ConnectionClosed(str(err)) from err

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class LatencyLine:
    """A line whose requests reach the serial side ``latency`` s after they came in: a gateway's
    forwarding time.  Under a PacedLine, the serial line's time then comes on top of it."""

    def __init__(self, line: ByteLine, latency: float, sleep: Callable[[float], None] = time.sleep):
        self.line = line
        self.latency = latency
        self.sleep = sleep

    def read(self, timeout: Optional[float]) -> bytes:
        data = self.line.read(timeout)
        if data and self.latency > 0:
            self.sleep(self.latency)
        return data

    def write(self, data: bytes) -> None:
        self.line.write(data)


class MbapFramer:
    """Cuts a Modbus TCP byte stream into (transaction id, unit id, PDU) requests."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Tuple[int, int, bytes]]:
        self.buffer += data
        while len(self.buffer) >= HEADER_BYTES:
            tid, protocol, length, unit = HEADER.unpack(self.buffer[:HEADER_BYTES])
            if protocol != 0 or not 2 <= length <= MAX_LENGTH:
                raise NotModbusTcp(f"header {bytes(self.buffer[:HEADER_BYTES]).hex(' ')}")
            end = HEADER_BYTES - 1 + length
            if len(self.buffer) < end:
                return
            pdu = bytes(self.buffer[HEADER_BYTES:end])
            del self.buffer[:end]
            yield tid, unit, pdu


def usable_reply(request: bytes, reply: Optional[bytes]) -> bool:
    """``reply`` is exactly one CRC-valid RTU reply of the addressed slave to ``request``'s function."""
    if not reply or len(reply) < EXCEPTION_BYTES or reply[0] != request[0] or reply[1] & 0x7F != request[1]:
        return False
    size = EXCEPTION_BYTES if reply[1] & 0x80 else REPLY_OVERHEAD + reply[2]
    return len(reply) == size and crc_ok(reply)


def mbap_reply(tid: int, rtu_reply: bytes) -> bytes:
    """An RTU reply (slave id, PDU, CRC) as the Modbus TCP reply to transaction ``tid``."""
    pdu = rtu_reply[1:-2]
    return HEADER.pack(tid, 0, len(pdu) + 1, rtu_reply[0]) + pdu


class MbapConnection:
    """Serves one Modbus TCP connection: MBAP in, RTU to the virtual meters, MBAP out."""

    def __init__(self, line: SocketLine, loop: SlaveLoop, pacing: Optional[Pacing], latency: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.line = line
        self.loop = loop
        self.pacing = pacing
        self.latency = latency
        self.clock = clock
        self.sleep = sleep
        self.framer = MbapFramer()

    def handle(self, data: bytes, now: float) -> None:
        for tid, unit, pdu in self.framer.feed(data):
            # the virtual meters understand register reads only, as on the pty (8-byte frames)
            request = add_crc(bytes([unit]) + pdu)
            reply = self.loop.reply_to(request, now) if len(pdu) == READ_PDU_BYTES else None
            if reply is None or not usable_reply(request, reply):
                continue
            self._await_serial_side(len(request), len(reply), now)
            self.line.write(mbap_reply(tid, reply))
            self.loop.served += 1

    def _await_serial_side(self, request_bytes: int, reply_bytes: int, now: float) -> None:
        """Hold the reply until the meter's answer would be complete on the serial line,
        plus the gateway's latency."""
        due = now
        if self.pacing is not None:
            self.pacing.received(request_bytes, now)
            due = self.pacing.schedule(reply_bytes, now)[-1][0]
        wait = due + self.latency - self.clock()
        if wait > 0:
            self.sleep(wait)


@dataclasses.dataclass
class SimBus:
    """What every line of one simulator serves: the same meters, faults, pacing and lock."""

    meters: Dict[int, VirtualMeter]
    garbage: List[int]
    seed: Optional[int]
    disturb: Optional[Disturb]
    lock: ContextManager[object]
    pacing: Optional[Pacing] = None
    latency: float = 0.0
    tempers: Optional[Tempers] = None   # per-meter timing behaviour: the pty and rtu+tcp lines only

    def slave_loop(self, line: ByteLine, power_cycle_after: Optional[float] = None) -> SlaveLoop:
        return SlaveLoop(line, self.meters, self.garbage, self.seed, self.disturb, self.lock, power_cycle_after,
                         self.tempers)

    def fresh_pacing(self) -> Optional[Pacing]:
        """A line model of its own for one connection (its wire time is its own)."""
        return None if self.pacing is None else dataclasses.replace(self.pacing, busy_until=0.0)


def serve_rtu(bus: SimBus, sock: socket.socket, running: Callable[[], bool]) -> None:
    """A transparent gateway's connection: RTU frames to and from the slave loop."""
    line = paced(LatencyLine(SocketLine(sock), bus.latency), bus.fresh_pacing())
    loop = bus.slave_loop(line)
    while running():
        data = line.read(POLL)
        if data:
            loop.handle(data, time.monotonic())


def serve_mbap(bus: SimBus, sock: socket.socket, running: Callable[[], bool]) -> None:
    """A Modbus TCP gateway's connection."""
    line = SocketLine(sock)
    connection = MbapConnection(line, bus.slave_loop(line), bus.fresh_pacing(), bus.latency)
    while running():
        data = line.read(POLL)
        if data:
            connection.handle(data, time.monotonic())


KIND_NAMES = {"tcp": "Modbus TCP", "rtu+tcp": "transparent RTU over TCP"}
SERVE = {"tcp": serve_mbap, "rtu+tcp": serve_rtu}


class GatewayServer:
    """Listens on one address and serves every connection in a thread of its own."""

    def __init__(self, kind: str, address: str, bus: SimBus):
        host, port = parse_address(address, allow_zero=True)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.kind = kind
        self.bus = bus
        self.listener = socket.create_server((host, port), family=family)
        self.listener.settimeout(POLL)
        self.host, self.port = host, self.listener.getsockname()[1]
        self.running = True
        self.threads: List[threading.Thread] = []
        self.connections: List[socket.socket] = []

    @property
    def url(self) -> str:
        """The port to give the gateway (``tcp://127.0.0.1:5020``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}"

    def start(self) -> GatewayServer:
        log.info("listening on %s:%d (%s)", self.host, self.port, KIND_NAMES[self.kind])
        self._spawn(self._accept_forever, "accept")
        return self

    def stop(self) -> None:
        self.running = False
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=2 * POLL + 1)
        for sock in list(self.connections):
            sock.close()

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=f"{self.kind}-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept_forever(self) -> None:
        while self.running:
            try:
                sock, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return            # the listener was closed: stopping
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections.append(sock)
            self._spawn(self._serve, str(peer[1]), sock, peer)

    def _serve(self, sock: socket.socket, peer: Tuple[Any, ...]) -> None:   # (host, port, ...) by family
        log.info("%s: connection from %s:%d", self.url, peer[0], peer[1])
        try:
            SERVE[self.kind](self.bus, sock, lambda: self.running)
        except ConnectionClosed as err:
            log.info("%s: connection from %s:%d ended (%s)", self.url, peer[0], peer[1], err)
        except NotModbusTcp as err:
            log.warning("%s: not Modbus TCP from %s:%d (%s); connection closed", self.url, peer[0], peer[1], err)
        finally:
            sock.close()
            self.connections.remove(sock)
