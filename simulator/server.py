"""The slave loop: find request frames on the line, answer as the addressed meter would.

Read requests (8-byte frames of FC 03 / 04) and FC 16 writes (of settings)
are understood; any other function to one of our meters gets exception 01.
A frame with a bad CRC, for an id no virtual meter owns, or sent at a baud
rate the addressed meter is not set to, gets no answer at all, as on a real
bus (Eastron: "if an error occurs in receipt of the message, the meter will
make no response").
"""

from __future__ import annotations

import contextlib
import logging
import random
import struct
import time
from typing import Callable, Collection, ContextManager, Dict, Iterator, Optional

from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing.rtu import (
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    MAX_WRITE_REGISTERS,
    REQUEST_BYTES,
    WRITE_MULTIPLE,
    crc_ok,
)

from .meters import MeterException, VirtualMeter, rekey
from .timing import ANSWER, GARBLE, IGNORE, Tempers, garbled

log = logging.getLogger(__name__)

STALE_PARTIAL = 0.05   # seconds after which an incomplete frame is dropped
WRITE_HEAD = 7         # FC 16: slave, fc, address (2), count (2), byte count; then data and CRC


def frame_length(buffer: bytes) -> int:
    """How long the request starting at buffer[0] is: 8 bytes, or an FC 16 write's 9 + data
    (when its head is consistent: a byte count of twice the register count, at most 123)."""
    if len(buffer) >= WRITE_HEAD and buffer[1] == WRITE_MULTIPLE:
        count = int.from_bytes(buffer[4:6], "big")
        if 1 <= count <= MAX_WRITE_REGISTERS and buffer[6] == 2 * count:
            return WRITE_HEAD + buffer[6] + 2
    return REQUEST_BYTES


class FrameFinder:
    """Cuts the byte stream into CRC-valid 8-byte request frames, resyncing on noise."""

    def __init__(self):
        self.buffer = bytearray()
        self.last_byte = 0.0

    def feed(self, data: bytes, now: float) -> Iterator[bytes]:
        if self.buffer and now - self.last_byte > STALE_PARTIAL:
            self.buffer.clear()
        self.buffer += data
        self.last_byte = now
        while len(self.buffer) >= REQUEST_BYTES:
            size = frame_length(self.buffer)
            if size > len(self.buffer):
                later = self._frame_after_start()
                if later is None:
                    return            # the rest of a write may still come
                del self.buffer[:later]   # it was noise that looked like a write's head
            elif crc_ok(bytes(self.buffer[:size])):
                yield self._take(size)
            elif size != REQUEST_BYTES and crc_ok(bytes(self.buffer[:REQUEST_BYTES])):
                yield self._take(REQUEST_BYTES)
            else:
                del self.buffer[0]

    def _frame_after_start(self) -> Optional[int]:
        """Where a complete 8-byte frame starts after the first byte, if one does."""
        return next((i for i in range(1, len(self.buffer) - REQUEST_BYTES + 1)
                     if crc_ok(bytes(self.buffer[i:i + REQUEST_BYTES]))), None)

    def _take(self, size: int) -> bytes:
        frame = bytes(self.buffer[:size])
        del self.buffer[:size]
        return frame


def exception_reply(slave: int, fc: int, code: int) -> bytes:
    return add_crc(struct.pack(">BBB", slave, fc | 0x80, code))


def register_reply(slave: int, fc: int, words) -> bytes:
    return add_crc(struct.pack(f">BBB{len(words)}H", slave, fc, 2 * len(words), *words))


def answer(meters: Dict[int, VirtualMeter], request: bytes, baud: Optional[int] = None,
           now: float = 0.0) -> Optional[bytes]:
    """The reply to one CRC-valid request frame (sent at ``baud``, None: unknown), or None to stay silent."""
    slave, fc = request[0], request[1]
    meter = meters.get(slave)
    if meter is None or not meter.hears(baud):
        return None
    if fc == WRITE_MULTIPLE:
        return write_reply(meters, meter, request, now)
    if fc not in (0x03, 0x04):
        return exception_reply(slave, fc, ILLEGAL_FUNCTION)
    start, count = struct.unpack(">HH", request[2:6])
    try:
        return register_reply(slave, fc, meter.read(fc, start, count))
    except MeterException as exc:
        return exception_reply(slave, fc, exc.code)


def write_reply(meters: Dict[int, VirtualMeter], meter: VirtualMeter, request: bytes, now: float) -> bytes:
    """Store an FC 16 write and echo its address and count; exception 03 for a malformed frame."""
    slave = request[0]
    start, count, size = struct.unpack(">HHB", request[2:7])
    if size != 2 * count or len(request) != WRITE_HEAD + size + 2:
        return exception_reply(slave, WRITE_MULTIPLE, ILLEGAL_DATA_VALUE)
    try:
        meter.write(start, struct.unpack(f">{count}H", request[7:7 + size]), now)
    except MeterException as exc:
        return exception_reply(slave, WRITE_MULTIPLE, exc.code)
    if meter.slave != slave:
        rekey(meters)      # a change that applies at once: from now on the meter answers at its new id
    return add_crc(request[:6])


def garbage_reply(rng: random.Random) -> bytes:
    """Random bytes of a broken meter (or one at the wrong baud rate): never a valid frame."""
    while True:
        noise = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 12)))
        if not crc_ok(noise):
            return noise


# (request, correct reply or None, now) -> the bytes actually put on the line
Disturb = Callable[[bytes, Optional[bytes], float], bytes]


class SlaveLoop:
    """Serves the virtual meters on one line until stopped; ids in ``garbage`` answer random bytes,
    ``disturb`` injects faults into the other answers (simulator/faults.py).

    Several loops (a pty and TCP connections, each in a thread) may share the
    meters and the fault injector: they then share one ``lock``, held while
    a reply is computed (not while it is written out).
    """

    def __init__(self, line, meters: Dict[int, VirtualMeter], garbage: Collection[int] = (),
                 seed: Optional[int] = None, disturb: Optional[Disturb] = None,
                 lock: Optional[ContextManager] = None, power_cycle_after: Optional[float] = None,
                 tempers: Optional[Tempers] = None):
        self.line = line
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.meters = meters
        self.garbage = frozenset(garbage)
        self.rng = random.Random(seed)
        self.disturb = disturb
        self.power_cycle_after = power_cycle_after   # s after a settings write; None: only on request
        self.power_cycle_requested = False           # set by a signal handler, done between frames
        self.finder = FrameFinder()
        self.tempers = tempers                       # meters difficult about timing (simulator/timing.py)
        pacing = getattr(line, "pacing", None)
        self.line_turnaround = pacing.turnaround if pacing is not None else 0.0
        self.running = True
        self.served = 0

    def serve_forever(self) -> None:
        while self.running:
            data = self.line.read(0.2)
            self.cycle_due(time.monotonic())
            if data:
                self.handle(data, time.monotonic())

    def cycle_due(self, now: float) -> None:
        """Power-cycle every meter on request (a signal), or each meter whose settings write is old enough."""
        due = [m for m in self.meters.values() if self.power_cycle_requested or (
            m.pending and self.power_cycle_after is not None and m.written_at is not None
            and now - m.written_at >= self.power_cycle_after)]
        self.power_cycle_requested = False
        for meter in due:
            before = (meter.slave, meter.line)
            meter.power_cycle()
            log.info("meter %s (%s) power-cycled: id %d, line %s", before[0], meter.model.model, meter.slave,
                     "any baud rate" if meter.line is None else f"{meter.line.baud} {meter.line.parity}")
        if due:
            rekey(self.meters)

    def line_baud(self) -> Optional[int]:
        """The baud rate the other end set on the pty (None where the line cannot tell)."""
        baud = getattr(self.line, "baud", None)
        return baud() if callable(baud) else None

    def handle(self, data: bytes, now: float) -> None:
        for request in self.finder.feed(data, now):
            meter = self.meters.get(request[0])
            action, turnaround = (ANSWER, None) if self.tempers is None else self.tempers.verdict(request[0], now)
            if action == IGNORE:
                log.debug("request %s ignored (too soon after the last answer)", request.hex())
                continue
            reply = self.reply_to(request, now)
            if reply is not None:
                self._pace_as(meter, turnaround)
                self.line.write(garbled(reply) if action == GARBLE else reply)
                self.served += 1
                if self.tempers is not None:
                    self.tempers.answered(request[0], time.monotonic())

    def reply_to(self, request: bytes, now: float) -> Optional[bytes]:
        """The bytes the bus carries back for one CRC-valid request frame; None for silence."""
        reply: Optional[bytes]
        with self.lock:
            if request[0] in self.garbage:
                reply = garbage_reply(self.rng)
            else:
                reply = answer(self.meters, request, self.line_baud(), now)
                if self.disturb is not None:
                    reply = self.disturb(request, reply, now) or None
        log.debug("request %s -> %s", request.hex(), reply.hex() if reply else "silence")
        return reply

    def _pace_as(self, meter: Optional[VirtualMeter], turnaround: Optional[float] = None) -> None:
        """A paced line answers at the answering meter's own baud rate once that is known, after
        the meter's own turnaround when it has one (else the line's)."""
        pacing = getattr(self.line, "pacing", None)
        if pacing is None:
            return
        pacing.turnaround = self.line_turnaround if turnaround is None else turnaround
        if meter is not None and meter.line is not None:
            pacing.char_time = meter.line.char_time
