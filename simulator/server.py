"""The slave loop: find request frames on the line, answer as the addressed meter would.

Only read requests (8-byte frames of FC 03 / 04) are understood; any other
function to one of our meters gets exception 01.  A frame with a bad CRC, or
for an id no virtual meter owns, gets no answer at all, as on a real bus.
"""

from __future__ import annotations

import contextlib
import logging
import random
import struct
import time
from typing import Callable, Collection, ContextManager, Dict, Iterator, Optional

from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing.rtu import ILLEGAL_FUNCTION, REQUEST_BYTES, crc_ok

from .meters import MeterException, VirtualMeter

log = logging.getLogger(__name__)

STALE_PARTIAL = 0.05   # seconds after which an incomplete frame is dropped


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
            candidate = bytes(self.buffer[:REQUEST_BYTES])
            if crc_ok(candidate):
                del self.buffer[:REQUEST_BYTES]
                yield candidate
            else:
                del self.buffer[0]


def exception_reply(slave: int, fc: int, code: int) -> bytes:
    return add_crc(struct.pack(">BBB", slave, fc | 0x80, code))


def register_reply(slave: int, fc: int, words) -> bytes:
    return add_crc(struct.pack(f">BBB{len(words)}H", slave, fc, 2 * len(words), *words))


def answer(meters: Dict[int, VirtualMeter], request: bytes) -> Optional[bytes]:
    """The reply to one CRC-valid request frame, or None to stay silent."""
    slave, fc = request[0], request[1]
    meter = meters.get(slave)
    if meter is None:
        return None
    if fc not in (0x03, 0x04):
        return exception_reply(slave, fc, ILLEGAL_FUNCTION)
    start, count = struct.unpack(">HH", request[2:6])
    try:
        return register_reply(slave, fc, meter.read(fc, start, count))
    except MeterException as exc:
        return exception_reply(slave, fc, exc.code)


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
                 lock: Optional[ContextManager] = None):
        self.line = line
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.meters = meters
        self.garbage = frozenset(garbage)
        self.rng = random.Random(seed)
        self.disturb = disturb
        self.finder = FrameFinder()
        self.running = True
        self.served = 0

    def serve_forever(self) -> None:
        while self.running:
            data = self.line.read(0.2)
            if data:
                self.handle(data, time.monotonic())

    def handle(self, data: bytes, now: float) -> None:
        for request in self.finder.feed(data, now):
            reply = self.reply_to(request, now)
            if reply is not None:
                self.line.write(reply)
                self.served += 1

    def reply_to(self, request: bytes, now: float) -> Optional[bytes]:
        """The bytes the bus carries back for one CRC-valid request frame; None for silence."""
        with self.lock:
            if request[0] in self.garbage:
                reply = garbage_reply(self.rng)
            else:
                reply = answer(self.meters, request)
                if self.disturb is not None:
                    reply = self.disturb(request, reply, now) or None
        log.debug("request %s -> %s", request.hex(), reply.hex() if reply else "silence")
        return reply
