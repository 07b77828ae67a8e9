"""GET /ws: every meter update and every status update to every client.

Formats (``/ws?format=...``):

- ``frames`` (default, gosdm630's): one text frame per measurement,
  ``{"DeviceId","Value","IEC61850","Description","Timestamp"}`` with the read
  time in ms, and the /status object once a second;
- ``readings``: one frame per meter read holding the meter's whole Readings
  object (as ``/last/{id}``), and the same status frames.

A new client first gets the current readings of every available meter and the
status, so a fresh page is never empty.

Fan-out: the hub hands each event to the broadcaster's inbox (the poller does
nothing more).  The broadcaster greenlet takes whatever waits there as one
round, encodes it once per format into the bytes of complete websocket frames
(server frames are unmasked, so the bytes are the same for everyone) and
offers them to every client: sent at once when the client's socket takes
them, else put in the client's bounded queue, drained by the client's own
writer greenlet.  After a round it rests as long as the round took, so with
many clients the rounds grow instead of the poller starving.  A client whose
queue is full is dropped; one that sends nothing (not even the pong to our
pings) for ``idle_timeout`` s is taken as vanished and dropped.

Input: the gateway expects almost nothing from a client (pongs, a ping now and
then, a close). :class:`FrameRules` judges every frame it sends: frames over
the budget (``frames_per_second`` with a burst of ``frame_burst``; pings count
too) end the connection with 1008, a frame over 4 KiB with 1009, and protocol
violations (an unmasked frame, RSV bits, an unknown opcode, a continuation
without a start, a new message inside a fragmented one, a broken control
frame) with 1002, as RFC 6455 7.4.1 names them. One address may hold at most
``per_address`` connections.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple

import bottle
import gevent
from gevent.queue import Empty, Full, Queue
from geventwebsocket.websocket import WebSocket

from ..api import ApiError
from ..compat.geventwebsocket import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    ClientFrame,
    FrameTooLong,
    ProtocolViolation,
    connection_socket,
    frame,
    mark_closed,
    raw_writer,
    read_frame,
)
from ..hub import Hub, MeterState, MeterUpdate, StatusUpdate
from ..quietlog import RepeatLog
from ..readings import compact
from ..status import status
from .events import measured, ws_record
from .slots import PerAddress

log = logging.getLogger(__name__)
quiet = RepeatLog(log)

FRAMES = "frames"
READINGS = "readings"
FORMATS = (FRAMES, READINGS)
MAX_CLIENT_FRAME = 4096     # clients only send control frames; more is abuse
YIELD_EVERY = 64            # clients served between two yields of the broadcaster
STOP = b""                  # writer sentinel: leave after what was queued before
COALESCE = 64               # queued rounds a writer that fell behind sends in one write
ROUND = 1024                # hub events broadcast together at most
MAX_PAUSE = 0.5             # s, longest rest of the broadcaster between two rounds


@dataclass(frozen=True)
class WsSettings:
    queue: int = 256              # rounds of updates a client may fall behind before it is dropped
    ping_interval: float = 20.0   # s between our pings
    idle_timeout: float = 60.0    # s without any frame from the client (pongs count): vanished
    send_buffer: int = 64 * 1024  # kernel send buffer per client, bytes (bounds kernel memory)
    inbox: int = 4096             # hub events waiting for the broadcaster
    max_clients: int = 200        # connected clients; one more is refused (close code 1013)
    per_address: int = 10         # connected clients from one address
    frames_per_second: float = 2.0   # the client's frames (pongs, pings, anything) in the long run
    frame_burst: int = 20         # frames a client may send at once before the rate applies


GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
DATA_OPCODES = (OPCODE_TEXT, OPCODE_BINARY)
CONTROL_OPCODES = (OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG)

Verdict = Optional[Tuple[int, str]]      # (close code, reason) when a frame ends the connection


class FrameRules:
    """What one client may send: RFC 6455's rules for a client, and a budget of frames
    (a token bucket: ``burst`` at once, ``rate`` per second in the long run)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.refilled = clock()
        self.in_message = False     # a fragmented text or binary message has begun

    def judge(self, got: ClientFrame) -> Verdict:
        """None when ``got`` may pass, else the close code and reason that end the connection."""
        return self._protocol(got) or self._budget()

    def _protocol(self, got: ClientFrame) -> Verdict:
        if not got.masked:
            return PROTOCOL_ERROR, "an unmasked frame"
        if got.rsv:
            return PROTOCOL_ERROR, "RSV bits set without an extension"
        if got.opcode not in (OPCODE_CONTINUATION, *DATA_OPCODES, *CONTROL_OPCODES):
            return PROTOCOL_ERROR, f"unknown opcode {got.opcode:#x}"
        if got.opcode in CONTROL_OPCODES:
            return None
        if got.opcode == OPCODE_CONTINUATION and not self.in_message:
            return PROTOCOL_ERROR, "a continuation frame without a message to continue"
        if got.opcode in DATA_OPCODES and self.in_message:
            return PROTOCOL_ERROR, "a new message inside a fragmented one"
        self.in_message = not got.fin
        return None

    def _budget(self) -> Verdict:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0:
            return POLICY_VIOLATION, (f"more than {self.burst} frames at once or {self.rate:g} a second: "
                                      "this stream takes almost nothing from clients")
        self.tokens -= 1.0
        return None


PING = frame(b"", OPCODE_PING)
GOODBYE = frame(struct.pack("!H", GOING_AWAY) + b"server stopping", OPCODE_CLOSE)


def meter_frames(meter: str, device_id: int, values: Mapping[str, Optional[float]], timestamp: float) -> bytes:
    """gosdm630 frames, one per usable value."""
    return b"".join(frame(compact(ws_record(meter, device_id, name, value, timestamp)))
                    for name, value in measured(values))


def readings_frame(meter: MeterState) -> bytes:
    return frame(meter.readings_json().rstrip(b"\n"))


def refuse(ws: WebSocket, code: int, reason: str) -> str:
    """End a connection right after the handshake with a close frame saying why."""
    raw_writer(ws)(frame(struct.pack("!H", code) + reason.encode()[:120], OPCODE_CLOSE))
    mark_closed(ws)           # its own close() would drop the code (library bug)
    return ""


class Client:
    """One websocket connection: its bounded queue, its writer, its reader loop."""

    def __init__(self, ws: WebSocket, fmt: str, settings: WsSettings, name: str):
        self.ws = ws
        self.format = fmt
        self.settings = settings
        self.name = name
        self.reason: Optional[str] = None    # why it ended, first cause wins
        self.sock = connection_socket(ws)
        self._send = raw_writer(ws)
        self.queue: Queue = Queue(settings.queue)
        self.sending = False                 # the writer is inside a write
        self.rules = FrameRules(settings.frames_per_second, settings.frame_burst)
        self.broke_rules = False             # it was closed for what it sent
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer)
        self.sock.settimeout(settings.idle_timeout)
        self.writer = gevent.spawn(self._write)

    def offer(self, data: bytes) -> bool:
        """Send or queue frames; False when the client is too far behind.

        When the writer is idle, whatever the socket takes at once is sent right
        here (no greenlet switch); only the rest is queued for the writer.
        """
        if not self.sending and self.queue.empty():
            try:
                # gevent's socket.send takes a timeout (0: never waits); the stdlib stubs do not know it
                sent = self.sock.send(data, 0, 0.0)  # type: ignore[call-arg]
            except BlockingIOError:
                sent = 0
            except OSError as err:
                self.end(f"send failed ({err})")
                return True
            if sent == len(data):
                return True
            data = data[sent:]
        try:
            self.queue.put_nowait(data)
            return True
        except Full:
            return False

    def end(self, reason: str) -> None:
        """Cut the connection (from any greenlet): the reader and writer both stop."""
        if self.reason is None:
            self.reason = reason
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _write(self) -> None:
        next_ping = time.monotonic() + self.settings.ping_interval
        try:
            while True:
                wait = next_ping - time.monotonic()
                if wait <= 0:
                    self.offer(PING)
                    next_ping = time.monotonic() + self.settings.ping_interval
                    continue
                try:
                    batch = [self.queue.get(timeout=wait)]
                except Empty:
                    continue
                while batch[-1] is not STOP and len(batch) < COALESCE and not self.queue.empty():
                    batch.append(self.queue.get_nowait())   # behind: one write for several updates
                data = b"".join(batch)
                if data:
                    self.sending = True
                    try:
                        self._send(data)
                    finally:
                        self.sending = False
                if batch[-1] is STOP:
                    return
        except OSError as err:
            self.end(f"send failed ({err})")

    def read_until_closed(self) -> None:
        """Read the client's frames until it closes, vanishes or breaks a rule."""
        while self.reason is None:
            try:
                got = read_frame(self.ws, MAX_CLIENT_FRAME)
            except FrameTooLong as err:
                self.fail(MESSAGE_TOO_BIG, f"sent {err}")
                return
            except ProtocolViolation as err:
                self.fail(PROTOCOL_ERROR, f"broke the protocol: {err}")
                return
            except socket.timeout:
                self.end(f"silent for {self.settings.idle_timeout:g} s")
                return
            except OSError as err:    # WebSocketError (end of stream) included
                self.end(f"connection lost ({err or 'end of stream'})")
                return
            verdict = self.rules.judge(got)
            if verdict is not None:
                self.fail(verdict[0], f"sent {verdict[1]}")
                return
            if got.opcode == OPCODE_CLOSE:
                self.finish_politely(got.payload[:2] or struct.pack("!H", 1000))
                return
            if got.opcode == OPCODE_PING:
                self.offer(frame(got.payload, OPCODE_PONG))
            gevent.sleep(0)     # a client whose frames are already there must not keep the loop

    def fail(self, code: int, reason: str) -> None:
        """End the connection for what the client sent, telling it why with ``code``."""
        self.broke_rules = True
        self.reason = reason
        self._last_frame(frame(struct.pack("!H", code) + reason.encode()[:120], OPCODE_CLOSE), wait=0.5)

    def finish_politely(self, code: bytes) -> None:
        """Answer the client's close frame after what is already queued, then stop."""
        self.reason = "closed by the client"
        self._last_frame(frame(bytes(code), OPCODE_CLOSE), wait=2)

    def _last_frame(self, data: bytes, wait: float) -> None:
        """Send ``data`` after what is queued and stop the writer (at most ``wait`` s)."""
        if self.offer(data) and not self.queue.full():
            self.queue.put_nowait(STOP)
            self.writer.join(timeout=wait)

    def close(self) -> None:
        """Final clean-up, in the connection's own greenlet."""
        self.writer.kill(block=False)
        mark_closed(self.ws)          # the library must not write after us
        self.end(self.reason or "done")


class Broadcaster:
    """The /ws route, its clients, and the greenlet that fans hub events out to them."""

    def __init__(self, hub: Hub, settings: Optional[WsSettings] = None):
        self.hub = hub
        self.settings = settings or WsSettings()
        self.clients: Dict[str, Set[Client]] = {fmt: set() for fmt in FORMATS}
        self.addresses = PerAddress(self.settings.per_address)
        self.inbox: Queue = Queue(self.settings.inbox)
        self._overflowed = False
        hub.subscribe(self.on_event)
        self.greenlet = gevent.spawn(self._run)

    def mount(self, app: bottle.Bottle) -> None:
        app.route("/ws", "GET", self.handle)

    def stop(self, grace: float = 0.5) -> None:
        """Stop broadcasting; tell every client we are going away (close code 1001), give
        their writers ``grace`` s in all to send that, then cut whoever is left."""
        self.hub.unsubscribe(self.on_event)
        self.greenlet.kill()
        clients = [client for group in self.clients.values() for client in group]
        for client in clients:
            client.reason = client.reason or "server stopping"
            if client.offer(GOODBYE) and not client.queue.full():
                client.queue.put_nowait(STOP)
        gevent.joinall([client.writer for client in clients], timeout=grace)
        for client in clients:
            client.end("server stopping")

    # -- fan-out -----------------------------------------------------------------
    def on_event(self, event: object) -> None:
        """Hub subscriber (poller greenlet): queue only, never block."""
        try:
            self.inbox.put_nowait(event)
            self._overflowed = False
        except Full:
            if not self._overflowed:
                log.warning("websocket: broadcaster %d events behind; dropping updates", self.settings.inbox)
            self._overflowed = True

    def _run(self) -> None:
        """Whatever waits in the inbox goes out together, as one write per client: under
        load the rounds grow, so a client costs one write per round, not one per update."""
        while True:
            events = [self.inbox.get()]
            while len(events) < ROUND and not self.inbox.empty():
                events.append(self.inbox.get_nowait())
            started = time.monotonic()
            try:
                self.broadcast(events)
            except Exception:   # one bad event must not end every stream
                log.exception("websocket: broadcasting %d events failed", len(events))
            # As long again for everyone else: fan-out never takes more than about
            # half the process from the poller; the next round carries what came meanwhile.
            gevent.sleep(min(time.monotonic() - started, MAX_PAUSE))

    def broadcast(self, events: List[object]) -> None:
        for fmt, clients in self.clients.items():
            data = self.encode(events, fmt) if clients else b""
            if data:
                self._offer_all(list(clients), data)

    def encode(self, events: List[object], fmt: str) -> bytes:
        """The frames of a round; in the readings format one frame per meter is enough."""
        parts: Dict[object, bytes] = {}
        for number, event in enumerate(events):
            if isinstance(event, StatusUpdate):
                parts[("event", number)] = frame(compact(event.status))
            elif isinstance(event, MeterUpdate) and fmt == READINGS:
                meter = self.hub.meters.get(event.name)     # None: removed by a reload meanwhile
                key = ("meter", event.name)
                parts.pop(key, None)       # its newest state, at its latest place
                if meter is not None:
                    parts[key] = readings_frame(meter)
            elif isinstance(event, MeterUpdate):
                parts[("event", number)] = meter_frames(event.name, event.device_id, event.values, event.timestamp)
        return b"".join(parts.values())

    def _offer_all(self, clients: List[Client], data: bytes) -> None:
        for count, client in enumerate(clients, start=1):
            if not client.offer(data):
                self.clients[client.format].discard(client)
                client.end(f"{self.settings.queue} rounds of updates behind")
            if count % YIELD_EVERY == 0:
                gevent.sleep(0)    # let the poller and the HTTP side in

    # -- one connection ------------------------------------------------------------
    def snapshot(self, fmt: str) -> bytes:
        """What a new client gets first: current readings of every available meter, and the status."""
        parts = []
        for meter in self.hub.available():
            if not meter.timestamp:
                continue
            if fmt == READINGS:
                parts.append(readings_frame(meter))
            else:
                parts.append(meter_frames(meter.name, meter.device_id, meter.values, meter.timestamp))
        parts.append(frame(compact(status(self.hub))))
        return b"".join(parts)

    def handle(self) -> str:
        environ = bottle.request.environ
        ws: Optional[WebSocket] = environ.get("wsgi.websocket")
        if ws is None:
            raise ApiError(400, "/ws is a websocket: connect with a websocket client (Upgrade: websocket)")
        address = environ.get("REMOTE_ADDR", "?")
        name = f"{address}:{environ.get('REMOTE_PORT')}"
        fmt = bottle.request.query.get("format", FRAMES)
        if fmt not in FORMATS:
            quiet.log(logging.INFO, "websocket refusals", "websocket %s: refused, unknown format %.40r", name, fmt)
            return refuse(ws, POLICY_VIOLATION, f"unknown format {fmt[:40]!r}: use frames or readings")
        if self.count() >= self.settings.max_clients:
            quiet.log(logging.WARNING, "websocket refusals", "websocket %s: refused, already %d clients",
                      name, self.count())
            return refuse(ws, TRY_AGAIN_LATER, f"too many clients (at most {self.settings.max_clients}); "
                                               "try again later")
        if not self.addresses.take(address):
            quiet.log(logging.WARNING, "websocket refusals", "websocket %s: refused, %s already has %d",
                      name, address, self.settings.per_address)
            return refuse(ws, TRY_AGAIN_LATER, f"too many clients from your address (at most "
                                               f"{self.settings.per_address}); try again later")
        try:
            self.serve(ws, fmt, name)
        finally:
            self.addresses.give_back(address)
        return ""

    def serve(self, ws: WebSocket, fmt: str, name: str) -> None:
        """One accepted connection, from its snapshot to its end."""
        client = Client(ws, fmt, self.settings, name)
        try:
            client.offer(self.snapshot(fmt))
            self.clients[fmt].add(client)
            log.info("websocket %s: connected (%s), %d clients", name, fmt, self.count())
            client.read_until_closed()
        finally:
            self.clients[fmt].discard(client)
            client.close()
            if client.broke_rules:     # a client can repeat this at will: not a line each time
                quiet.log(logging.WARNING, "websockets closed for their input",
                          "websocket %s: closed, %s; %d clients", name, client.reason, self.count())
            else:
                level = logging.INFO if client.reason == "closed by the client" else logging.WARNING
                log.log(level, "websocket %s: disconnected, %s; %d clients", name, client.reason, self.count())

    def count(self) -> int:
        return sum(len(clients) for clients in self.clients.values())
