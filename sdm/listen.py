"""Listening to a bus whose master is someone else (an inverter, a wallbox), and taking it over.

``mode = "listen"``: sdm never transmits.  The :class:`Listener` reads the
line in the bus thread, cuts the stream into frames (sdm/framing/sniff.py),
pairs each reply with the request before it and decodes the registers of
configured meters that the other master happens to read, by address, with
the same tables the poller uses.  Readings are partial: what the master does
not read stays null.  Requests to ids sdm does not know are counted per id
(the user learns what is on the bus); frames that cannot be checked or
paired are counted by kind and never decoded.  Everything is reported
through the poller's Sink and stored in the register cache, so served units
(sdm/serve.py) work from listened values too.

``mode = "auto"``: :class:`AutoBus` listens; once no foreign request has
been heard for ``takeover_after`` seconds it polls as usual, listening in
every pause between its own exchanges, and falls silent the moment a
foreign request shows up.  A foreign request that garbles sdm's own
exchange (the reply fails its checks) counts as a collision; sdm then
yields as well, so the other master keeps its bus.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Set, Tuple

from .cache import RegisterCache
from .config import MeterConfig
from .framing import rtu
from .framing.sniff import cut, frame_kind, read_chunk
from .hub import AVAILABLE, UNAVAILABLE
from .plan import Block, decode_block
from .poller import Poller, Sink
from .transport import Transport, TransportError

log = logging.getLogger(__name__)

TICK = 0.2                 # longest wait for bytes before the loop looks at its stop flag
REPORT_EVERY = 1.0         # seconds between two listen reports to the hub
REOPEN_MAX = 10.0
MISSED_LIMIT = 5           # unanswered requests in a row that make a listened meter unavailable
FRAME_KINDS = ("garbled", "unpaired", "unanswered")
GARBLING = (rtu.MalformedReply.kind, rtu.CRCError.kind, rtu.ShortReply.kind)


@dataclass(frozen=True)
class Request:
    slave: int
    fc: int
    start: int
    count: int
    frame: bytes


class ListenStats:
    """What a listened bus reveals, for /status: frames by kind, unknown ids, collisions."""

    def __init__(self, mode: str):
        self.mode = mode
        self.state = "listening"
        self.foreign_requests = 0
        self.decoded_values = 0
        self.collisions = 0
        self.takeovers = 0
        self.frames: Counter = Counter()
        self.unknown_ids: Counter = Counter()

    def snapshot(self) -> Dict[str, object]:
        return {
            "Mode": self.mode,
            "State": self.state,
            "ForeignRequests": self.foreign_requests,
            "DecodedValues": self.decoded_values,
            "Collisions": self.collisions,
            "Takeovers": self.takeovers,
            "FramesByKind": {kind: self.frames.get(kind, 0) for kind in FRAME_KINDS},
            "UnknownIds": {str(slave): count for slave, count in sorted(self.unknown_ids.items())},
        }


class Listener:
    """Decodes a foreign master's exchanges with configured meters; never writes to the line."""

    def __init__(self, sink: Sink, transport: Transport, meters: Sequence[MeterConfig], bus: str,
                 cache: Optional[RegisterCache] = None, mode: str = "listen",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.sink = sink
        self.transport = transport
        self.meters: Dict[int, MeterConfig] = {meter.device_id: meter for meter in meters}
        self.bus = bus
        self.cache = cache
        self.clock = clock
        self.sleep = sleep
        self.stats = ListenStats(mode)
        self.last_foreign = clock()        # the takeover clock starts at start-up
        self.running = False
        self._pending: Optional[Request] = None
        self._missed: Counter = Counter()
        self._unavailable: Set[int] = set()
        self._cycle: Dict[int, Set[Tuple[int, int, int]]] = {}
        self._reported = 0.0
        self._reopen_delay = 0.5

    # -- the loop of listen mode -------------------------------------------------------------------
    def run(self) -> None:
        self.running = True
        try:
            while self.running:
                if not self.transport.is_open and not self.open():
                    continue
                self.listen(TICK)
        finally:
            self.transport.close()
            self.sink.bus_state(self.bus, False, listen=self.stats.snapshot())

    def stop(self) -> None:
        self.running = False

    def open(self) -> bool:
        try:
            self.transport.open()
        except TransportError as err:
            log.error("bus %s: %s; retrying in %.1f s", self.bus, err, self._reopen_delay)
            self.sleep(self._reopen_delay)
            self._reopen_delay = min(2 * self._reopen_delay, REOPEN_MAX)
            return False
        self._reopen_delay = 0.5
        log.info("bus %s: listening on %s", self.bus, self.transport.port)
        self.sink.bus_state(self.bus, True, listen=self.stats.snapshot())
        return True

    def listen(self, wait: float) -> bool:
        """Read what comes within ``wait`` s (up to the silence after it) and decode it; True when a
        foreign request was among it.  A failing adapter is closed, to be reopened by the loop."""
        try:
            chunk = read_chunk(self.transport, wait, self.clock())
        except TransportError as err:
            log.error("bus %s: adapter lost (%s); reopening", self.bus, err)
            self.transport.close()
            self.sink.bus_state(self.bus, False, listen=self.stats.snapshot())
            return False
        foreign = self.feed(chunk, self.clock()) if chunk else False
        self._report(self.clock())
        return foreign

    # -- decoding ----------------------------------------------------------------------------------
    def feed(self, chunk: bytes, now: float) -> bool:
        """Take one chunk of line bytes; True when it held a request (a foreign master spoke)."""
        pieces = cut(chunk)
        if pieces.garbled:
            self.stats.frames["garbled"] += 1
        foreign = False
        for frame in pieces.frames:
            kind, slave, fc = frame_kind(frame)
            if kind == "request" and not self._is_echo(frame):
                foreign = True
                self._request(frame, slave, fc, now)
            elif kind == "exception":
                self._exception(slave, fc)
            else:
                self._reply(frame, slave, fc, now)
        return foreign

    def _is_echo(self, frame: bytes) -> bool:
        """An FC 05/06 reply repeats its request byte for byte."""
        return self._pending is not None and frame == self._pending.frame and frame[1] in (0x05, 0x06)

    def _request(self, frame: bytes, slave: int, fc: int, now: float) -> None:
        self.stats.foreign_requests += 1
        self.last_foreign = now
        self._unanswered()
        if slave not in self.meters and slave != 0:
            self.stats.unknown_ids[slave] += 1
        start, count = struct.unpack(">HH", frame[2:6])
        self._pending = Request(slave, fc, start, count, frame)

    def _unanswered(self) -> None:
        """The request before this one got no reply (or none that checked)."""
        pending, self._pending = self._pending, None
        if pending is None or pending.slave == 0:
            return
        self.stats.frames["unanswered"] += 1
        meter = self.meters.get(pending.slave)
        if meter is None:
            return
        self.sink.count(meter.name, rtu.NoReply.kind)
        self._missed[pending.slave] += 1
        if self._missed[pending.slave] >= MISSED_LIMIT and pending.slave not in self._unavailable:
            self._unavailable.add(pending.slave)
            log.warning("bus %s, meter %s (id %d): %d requests of the other master unanswered; unavailable",
                        self.bus, meter.name, pending.slave, MISSED_LIMIT)
            self.sink.set_status(meter.name, UNAVAILABLE)

    def _exception(self, slave: int, fc: int) -> None:
        pending = self._pending
        if pending is None or (pending.slave, pending.fc) != (slave, fc):
            self.stats.frames["unpaired"] += 1
            return
        self._pending = None
        meter = self.meters.get(slave)
        if meter is not None:
            self.sink.count(meter.name, rtu.ExceptionReply.kind)

    def _reply(self, frame: bytes, slave: int, fc: int, now: float) -> None:
        pending = self._pending
        if pending is None or (pending.slave, pending.fc) != (slave, fc):
            self.stats.frames["unpaired"] += 1
            return
        self._pending = None
        meter = self.meters.get(slave)
        if meter is None or fc not in (0x03, 0x04):
            return
        if frame[2] != 2 * pending.count:
            self.stats.frames["unpaired"] += 1
            return
        words = struct.unpack(f">{pending.count}H", frame[3:-2])
        self._decoded(meter, pending, words, now)

    def _decoded(self, meter: MeterConfig, request: Request, words: Sequence[int], now: float) -> None:
        if self.cache is not None:
            self.cache.store(self.bus, meter.device_id, request.fc, request.start, words, now)
        block = heard_block(meter, request)
        values = decode_block(block, words) if block.registers else {}
        self.sink.count(meter.name)
        self._missed[meter.device_id] = 0
        if meter.device_id in self._unavailable:
            self._unavailable.discard(meter.device_id)
            log.info("bus %s, meter %s (id %d): answers the other master again", self.bus, meter.name,
                     meter.device_id)
            self.sink.set_status(meter.name, AVAILABLE)
        if values:
            self.stats.decoded_values += len(values)
            self.sink.publish(meter.name, values, time.time(), self._completes(meter, request))

    def _completes(self, meter: MeterConfig, request: Request) -> bool:
        """True when the master asks for a block again: its cycle over this meter went round once."""
        seen = self._cycle.setdefault(meter.device_id, set())
        key = (request.fc, request.start, request.count)
        if key in seen:
            seen.clear()
            seen.add(key)
            return True
        seen.add(key)
        return False

    def _report(self, now: float) -> None:
        if now - self._reported >= REPORT_EVERY:
            self.report()

    def report(self) -> None:
        """Tell the hub what was heard so far (now and then, and at once when the state changes)."""
        self._reported = self.clock()
        self.sink.bus_state(self.bus, self.transport.is_open, listen=self.stats.snapshot())


def heard_block(meter: MeterConfig, request: Request) -> Block:
    """The measurements of ``meter`` that lie wholly inside a request's registers."""
    end = request.start + request.count
    regs = tuple(reg for reg in meter.model.registers
                 if reg.fc == request.fc and reg.address >= request.start and reg.end <= end)
    return Block(request.fc, request.start, request.count, regs)


class AutoBus:
    """``mode = "auto"``: listen, poll once the other master has been quiet, yield when it speaks."""

    def __init__(self, listener: Listener, poller: Poller, takeover_after: float):
        self.listener = listener
        self.poller = poller
        self.takeover_after = takeover_after
        self.polling = False
        self.running = False
        self._heard = False
        poller.sleep = self._listening_sleep     # the poller's pauses are spent listening
        poller.sink = GarbleWatch(poller.sink, self)

    def run(self) -> None:
        self.running = True
        try:
            while self.running:
                if not self.listener.transport.is_open and not self.listener.open():
                    continue
                self._step()
        finally:
            self.listener.transport.close()
            self.listener.sink.bus_state(self.listener.bus, False, listen=self.listener.stats.snapshot())

    def stop(self) -> None:
        self.running = False

    def _step(self) -> None:
        if not self.polling:
            self.listener.listen(TICK)
            if self.listener.clock() - self.listener.last_foreign >= self.takeover_after:
                self._take_over()
            return
        if self.listener.listen(0.0):      # anything that came in since the last exchange
            self._yield("a foreign request")
            return
        self._heard = False
        self.poller.step()
        if self._heard:
            self._yield("a foreign request")

    def _take_over(self) -> None:
        self.polling = True
        self.listener.stats.state = "polling"
        self.listener.stats.takeovers += 1
        log.info("bus %s: no other master for %.1f s; polling", self.listener.bus, self.takeover_after)
        self.listener.report()
        for reader in self.poller.readers:
            reader.ready_at = 0.0

    def _yield(self, why: str) -> None:
        self.polling = False
        self.listener.stats.state = "listening"
        self.listener.last_foreign = self.listener.clock()
        log.info("bus %s: %s; listening", self.listener.bus, why)
        self.listener.report()

    def collided(self) -> None:
        """One of sdm's exchanges was garbled while it polled: count it and leave the bus."""
        if self.polling:
            self.listener.stats.collisions += 1
            self._heard = True

    def _listening_sleep(self, wait: float) -> None:
        """The poller waits for a meter's pause: listen meanwhile, and end the wait when a foreign
        request is heard."""
        end = self.listener.clock() + wait
        while not self._heard:
            left = end - self.listener.clock()
            if left <= 0:
                return
            if self.listener.listen(left):
                self._heard = True


class GarbleWatch:
    """The poller's sink in auto mode: passes everything on and tells the bus about garbled replies."""

    def __init__(self, sink: Sink, auto: AutoBus):
        self.sink = sink
        self.auto = auto

    def publish(self, name: str, values: Mapping[str, Optional[float]],
                timestamp: Optional[float] = None, complete: bool = False) -> None:
        self.sink.publish(name, values, timestamp, complete)

    def count(self, name: str, error_kind: Optional[str] = None) -> None:
        if error_kind in GARBLING:
            self.auto.collided()
        self.sink.count(name, error_kind)

    def set_status(self, name: str, status: str) -> None:
        self.sink.set_status(name, status)

    def bus_state(self, bus: str, connected: bool, reopened: bool = False, hint: Optional[str] = None,
                  listen: Optional[Mapping[str, object]] = None) -> None:
        self.sink.bus_state(bus, connected, reopened, hint, listen)

    def drop(self, name: str, names: Sequence[str]) -> None:
        self.sink.drop(name, names)

    def timing(self, name: str, figures: Mapping[str, object]) -> None:
        self.sink.timing(name, figures)
