"""Serving the meters as MODBUS devices: a Modbus TCP server and an RTU slave, answering from the cache.

Each ``[[serve]]`` runs in a native thread of its own with blocking I/O (the
unpatched socket, select and sleep, whatever gevent has patched), like the
bus threads: an answer never waits for the gevent loop, so HTTP or websocket
load cannot delay it, and serving never touches a bus, so clients cannot slow
the polling.  The RTU slave's thread only tends a helper process
(sdm/serve_process.py) where the slave itself runs: its answer must follow
the silence within milliseconds, which a thread sharing the gateway's GIL
cannot promise under client load.  What is answered is decided by
sdm/slave.py.

The TCP server has no authentication (MODBUS has none): it binds loopback
unless told otherwise, caps its connections, closes idle ones and clients
that trickle a frame in too slowly, and drops a connection whose MBAP header
makes no sense (protocol id not 0, length 0 or over 254) rather than guess
where the next frame starts.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

from gevent import monkey
from gevent.threadpool import ThreadPool
from umodbus.client.serial.redundancy_check import add_crc

from .cache import RegisterCache
from .config import Config, MeterConfig, ServeConfig, serve_address, served_units
from .forward import GATEWAY_TARGET_FAILED, ForwardedWrite
from .framing.sniff import cut, frame_kind, read_chunk
from .serve_process import RtuSlaveProcess
from .slave import GATEWAY_PATH_UNAVAILABLE, Forward, Refusal, Responder, ServeStats, exception_pdu
from .transport import Comset, TransportError
from .transport.serial import SerialTransport

log = logging.getLogger(__name__)

_socket = monkey.get_original("socket", "socket")
_select = monkey.get_original("select", "select")
_sleep = monkey.get_original("time", "sleep")
_start_thread = monkey.get_original("_thread", "start_new_thread")

MBAP_HEAD = 7                 # transaction (2), protocol (2), length (2), unit
MAX_MBAP_LENGTH = 254         # unit id + the longest PDU (253)
FRAME_TIMEOUT = 5.0           # a frame begun must be complete within this many seconds
TICK = 0.2                    # how often the threads look at their stop flag


@dataclass
class Client:
    sock: socket.socket
    address: str
    buffer: bytearray = field(default_factory=bytearray)
    last_seen: float = 0.0
    frame_began: Optional[float] = None
    waiting: bool = False             # a forwarded write under way: its later frames wait for it


class MbapServer:
    """A Modbus TCP server on one address, all clients served by one native thread."""

    def __init__(self, address: Tuple[str, int], responder: Responder, max_connections: int,
                 idle_timeout: float, frame_timeout: float = FRAME_TIMEOUT):
        self.responder = responder
        self.stats = responder.stats
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.clients: Dict[int, Client] = {}
        self.running = True
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = _socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(64)
        self.address = self.listener.getsockname()[:2]

    def run(self) -> None:
        try:
            while self.running:
                self._round()
        finally:
            for client in list(self.clients.values()):
                self._drop(client, None)
            self.listener.close()

    def stop(self) -> None:
        self.running = False

    def _round(self) -> None:
        for client in list(self.clients.values()):
            if client.buffer and not client.waiting:     # frames that waited for a forwarded write
                self._answer_frames(client)
        socks = [self.listener] + [client.sock for client in self.clients.values() if not client.waiting]
        try:
            readable = _select(socks, [], [], TICK)[0]
        except (OSError, ValueError):
            readable = []
        for sock in readable:
            if sock is self.listener:
                self._accept()
            else:
                found = self.clients.get(id(sock))
                if found is not None:
                    self._receive(found)
        self._expire(time.monotonic())

    def _accept(self) -> None:
        try:
            sock, peer = self.listener.accept()
        except OSError:
            return
        address = f"{peer[0]}:{peer[1]}"
        if len(self.clients) >= self.max_connections:
            log.warning("serve %s: connection from %s refused: %d clients already", self.stats.where,
                        address, len(self.clients))
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # answers leave at once
        sock.setblocking(False)
        self.clients[id(sock)] = Client(sock, address, last_seen=time.monotonic())
        self.stats.connections = len(self.clients)
        log.debug("serve %s: client %s connected", self.stats.where, address)

    def _receive(self, client: Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._drop(client, f"receive failed: {err}")
            return
        if not data:
            self._drop(client, None)
            return
        now = time.monotonic()
        client.last_seen = now
        if not client.buffer:
            client.frame_began = now
        client.buffer += data
        self._answer_frames(client)

    def _answer_frames(self, client: Client) -> None:
        while len(client.buffer) >= MBAP_HEAD and id(client.sock) in self.clients and not client.waiting:
            transaction, protocol, length, unit = struct.unpack(">HHHB", client.buffer[:MBAP_HEAD])
            if protocol != 0 or not 2 <= length <= MAX_MBAP_LENGTH:
                self.stats.refuse("malformed")
                self._drop(client, f"malformed MBAP header (protocol {protocol}, length {length})")
                return
            if len(client.buffer) < 6 + length:
                return
            pdu = bytes(client.buffer[MBAP_HEAD:6 + length])
            del client.buffer[:6 + length]
            client.frame_began = time.monotonic() if client.buffer else None
            head = (transaction, unit)
            if self.responder.waits(pdu):
                # the bus takes its time: the write waits in a thread of its own, the other clients do not
                client.waiting = True
                _start_thread(self._answer, (client, head, pdu))
            else:
                self._answer(client, head, pdu)

    def _answer(self, client: Client, head: Tuple[int, int], pdu: bytes) -> None:
        transaction, unit = head
        reply = self._reply(unit, pdu, client.address)
        self._send(client, struct.pack(">HHHB", transaction, 0, len(reply) + 1, unit) + reply)
        client.waiting = False

    def _reply(self, unit: int, pdu: bytes, address: str) -> bytes:
        try:
            return self.responder.respond(unit, pdu, address)
        except Refusal as refusal:
            return exception_pdu(pdu[0] if pdu else 0, refusal.code)

    def _send(self, client: Client, data: bytes) -> None:
        """Answers are small: one that does not fit the socket's buffer means a client that does
        not read them, and it is dropped rather than allowed to hold the thread."""
        try:
            sent = client.sock.send(data)
        except OSError as err:
            self._drop(client, f"send failed: {err}")
            return
        if sent != len(data):
            self._drop(client, "does not read its answers")

    def _expire(self, now: float) -> None:
        for client in list(self.clients.values()):
            if client.waiting:
                continue
            if now - client.last_seen > self.idle_timeout:
                self._drop(client, f"idle for {self.idle_timeout:g} s")
            elif client.frame_began is not None and now - client.frame_began > self.frame_timeout:
                self._drop(client, f"a frame took longer than {self.frame_timeout:g} s")

    def _drop(self, client: Client, why: Optional[str]) -> None:
        if self.clients.pop(id(client.sock), None) is None:
            return
        if why:
            log.info("serve %s: client %s disconnected: %s", self.stats.where, client.address, why)
        try:
            client.sock.close()
        except OSError:
            pass
        self.stats.connections = len(self.clients)


class RtuSlave:
    """An RTU slave on a serial adapter of its own: answers requests to its units, ignores the rest.

    A request it must refuse with 0x0B (a stale or never read value, an id it
    does not serve) gets no answer at all, as an absent meter gives none.
    """

    def __init__(self, transport: SerialTransport, responder: Responder):
        self.transport = transport
        self.responder = responder
        self.stats = responder.stats
        self.running = True
        self._outage_logged = False     # one log line per outage of the adapter

    def run(self) -> None:
        try:
            while self.running:
                if not self.transport.is_open and not self._open():
                    continue
                try:
                    self.serve_chunk()
                except TransportError as err:
                    log.error("serve %s: adapter lost (%s); reopening", self.stats.where, err)
                    self.transport.close()
        finally:
            self.transport.close()

    def stop(self) -> None:
        self.running = False

    def _open(self) -> bool:
        try:
            self.transport.open()
        except TransportError as err:
            if not self._outage_logged:
                log.error("serve %s: %s; retrying every second", self.stats.where, err)
                self._outage_logged = True
            _sleep(1.0)
            return False
        self._outage_logged = False
        log.info("serve %s: open", self.stats.where)
        return True

    def serve_chunk(self) -> None:
        chunk = read_chunk(self.transport, TICK, time.monotonic())
        for frame in cut(chunk).frames:
            kind, slave, _ = frame_kind(frame)
            if kind == "request" and self.responder.serves(slave):
                self._answer(frame)

    def _answer(self, frame: bytes) -> None:
        slave, pdu = frame[0], frame[1:-2]
        try:
            reply = self.responder.respond(slave, pdu, self.stats.where)
        except Refusal as refusal:
            if refusal.code in (GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED):
                return
            reply = exception_pdu(pdu[0], refusal.code)
        self.transport.write(add_crc(bytes((slave,)) + reply))


class Serving:
    """Every ``[[serve]]`` of a gateway, each in its native thread."""

    def __init__(self, servers: Sequence[Server]):
        self.servers = list(servers)
        self.stats: List[ServeStats] = [server.stats for server in self.servers]
        self._pool = ThreadPool(max(1, len(self.servers)))
        self._runs: list = []

    def start(self) -> Serving:
        self._runs = [self._pool.spawn(server.run) for server in self.servers]
        return self

    def stop(self, timeout: float = 2.0) -> None:
        for server in self.servers:
            server.stop()
        end = time.monotonic() + timeout
        for run in self._runs:
            run.wait(max(0.0, end - time.monotonic()))
        self._pool.kill()


class Server(Protocol):
    """A Modbus TCP server or an RTU slave: runs in its thread until stopped."""

    stats: ServeStats

    def run(self) -> None: ...
    def stop(self) -> None: ...


def build_server(serve: ServeConfig, meters: Sequence[MeterConfig], cache: RegisterCache,
                 forward: Optional[Forward] = None) -> Server:
    """The server of one ``[[serve]]`` (bound, not yet running); OSError for an address in use."""
    units = served_units(serve, meters)
    if serve.port:
        log.info("serve: RTU slave on %s at %s, units %s (in a helper process)", serve.port,
                 Comset(serve.baud, serve.parity), _units_text(units))
        return RtuSlaveProcess(serve, units, cache, forward, verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    responder = Responder(units, cache, serve.max_age, serve.writes, ServeStats(serve.where), forward)
    server = MbapServer(serve_address(serve.listen), responder, serve.max_connections, serve.idle_timeout)
    host, port = server.address
    log.info("serve: Modbus TCP on %s:%d, units %s", host, port, _units_text(units))
    return server


def _units_text(units: Mapping[int, MeterConfig]) -> str:
    return ", ".join(f"{unit_id}={meter.bus}/{meter.name}" for unit_id, meter in units.items())


def start_serving(config: Config, cache: RegisterCache,
                  forward: Callable[[MeterConfig, ForwardedWrite], int]) -> Optional[Serving]:
    """Bind and start every ``[[serve]]`` of ``config`` (None when there is none)."""
    if not config.serve:
        return None
    servers: List[Server] = []
    try:
        for serve in config.serve:
            servers.append(build_server(serve, config.meters, cache, forward))
    except OSError as err:
        for server in servers:
            if isinstance(server, MbapServer):
                server.listener.close()
        raise OSError(f"serve {serve.where}: {err}") from err
    return Serving(servers).start()
