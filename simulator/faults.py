"""Fault injection: a bad bus, a flaky meter, an adapter pulled out, all on purpose.

Every answered request draws at most one fault (so one injected fault is one
failed exchange on the gateway, and the counts can be compared exactly):

========== =========================================================== ==============
fault      what goes on the line                                       gateway kind
========== =========================================================== ==============
crc        the reply with one byte after its header changed            crc
silent     nothing                                                     timeout
late       nothing now; the reply is held back and sent when the next  timeout
           request arrives (so after the gateway gave up), glued in
           front of that request's own answer: the next request is
           logged as ``collision``                                     malformed
truncated  the first 1 .. n-1 bytes of the reply                       short
garbage    3-12 noise bytes (not starting with the slave id), then     malformed
           the reply
exception  exception reply, code 4 (device failure) or 6 (busy)        exception
wrong_id   the reply as sent by another slave id                       malformed
========== =========================================================== ==============

A meter can be taken offline for windows of time (it stays silent: timeout),
and the whole pty can be "unplugged" for windows of time: the line is closed,
the link removed, and a new pty (on a new path) is linked when it comes back.
A served log records every request with its outcome and the values its reply
carried, decoded as the gateway decodes them, so a test can check every
published value against it.
"""

from __future__ import annotations

import json
import random
import struct
import time
from typing import IO, Dict, List, Mapping, Optional, Sequence, Tuple

from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing.rtu import EXCEPTION_BYTES
from sdm.meters.registry import parse_slave_id
from sdm.plan import Block, decode_block

from .line import PtyLine
from .meters import VirtualMeter

FAULTS = ("crc", "silent", "late", "truncated", "garbage", "exception", "wrong_id")
OK = "ok"
OFFLINE = "offline"
COLLISION = "collision"       # the request whose answer a held-back late reply ran into
NO_METER = "no_meter"         # addressed to an id no virtual meter has: silence, as on a real bus
REFUSED = "refused"           # the meter itself answered with an exception (e.g. unknown address)

# The error kind (sdm.rtu) each outcome must give on the gateway; None: a good reply.
GATEWAY_KIND: Dict[str, Optional[str]] = {
    OK: None, "crc": "crc", "silent": "timeout", "late": "timeout", "truncated": "short",
    "garbage": "malformed", "exception": "exception", "wrong_id": "malformed",
    COLLISION: "malformed", OFFLINE: "timeout", NO_METER: "timeout", REFUSED: "exception",
}

SLAVE_DEVICE_FAILURE = 4
SLAVE_DEVICE_BUSY = 6

Window = Tuple[float, float]


def parse_faults(text: str) -> Dict[str, float]:
    """``crc=0.01,late=0.02`` or ``all=0.05`` (spread evenly) -> {fault: probability}."""
    faults: Dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        try:
            probability = float(value)
        except ValueError:
            raise ValueError(f"fault {item!r} is not NAME=PROBABILITY") from None
        if not sep or not 0.0 <= probability <= 1.0:
            raise ValueError(f"fault {item!r}: probability must be 0..1")
        if name == "all":
            for fault in FAULTS:
                faults[fault] = faults.get(fault, 0.0) + probability / len(FAULTS)
        elif name in FAULTS:
            faults[name] = faults.get(name, 0.0) + probability
        else:
            raise ValueError(f"unknown fault {name!r} (known: all, {', '.join(FAULTS)})")
    if sum(faults.values()) > 1.0 + 1e-9:
        raise ValueError("fault probabilities add up to more than 1")
    return faults


def parse_window(text: str) -> Window:
    """``5-8`` -> (5.0, 8.0): seconds after the simulator started."""
    begin, sep, end = text.partition("-")
    try:
        window = (float(begin), float(end))
    except ValueError:
        raise ValueError(f"time window {text!r} is not FROM-TO (seconds)") from None
    if not sep or not 0 <= window[0] < window[1]:
        raise ValueError(f"time window {text!r} must be FROM-TO with FROM < TO")
    return window


def parse_offline(text: str) -> Tuple[int, Window]:
    """``2@5-8`` -> (2, (5.0, 8.0)): meter 2 silent from 5 s to 8 s."""
    slave, sep, window = text.partition("@")
    if not sep:
        raise ValueError(f"offline {text!r} is not ID@FROM-TO")
    try:
        return parse_slave_id(slave), parse_window(window)
    except ValueError as err:
        raise ValueError(f"offline {text!r}: {err}") from None


def inside(windows: Sequence[Window], elapsed: float) -> Optional[Window]:
    for window in windows:
        if window[0] <= elapsed < window[1]:
            return window
    return None


class ServedLog:
    """JSON lines: one per request (what was asked, what happened, the values served) and
    one per event.  Flushed before the reply goes out, so whatever the gateway has counted
    is already in the log."""

    def __init__(self, stream: Optional[IO[str]]):
        self.stream = stream
        self.record(event="start")

    def record(self, **fields: object) -> None:
        if self.stream is None:
            return
        self.stream.write(json.dumps({"t": time.time(), **fields}, separators=(",", ":")) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def served_values(meter: VirtualMeter, request: bytes, reply: bytes) -> Dict[str, Optional[float]]:
    """The measurements a register reply carries, decoded exactly as the gateway decodes them."""
    fc, start, count = request[1], *struct.unpack(">HH", request[2:6])
    regs = tuple(r for r in meter.model.registers if r.fc == fc and start <= r.address and r.end <= start + count)
    words = struct.unpack(f">{count}H", reply[3:3 + 2 * count])
    return decode_block(Block(fc, start, count, regs), words)


class FaultInjector:
    """Turns each correct reply into what the faulty bus delivers (see the module doc)."""

    def __init__(self, meters: Mapping[int, VirtualMeter], faults: Mapping[str, float], seed: Optional[int],
                 offline: Sequence[Tuple[int, Window]] = (), log: Optional[ServedLog] = None,
                 started: Optional[float] = None):
        self.meters = meters
        self.faults = [(name, faults[name]) for name in FAULTS if faults.get(name)]
        self.rng = random.Random(None if seed is None else f"faults:{seed}")
        self.offline: Dict[int, List[Window]] = {}
        for slave, window in offline:
            self.offline.setdefault(slave, []).append(window)
        self.log = log or ServedLog(None)
        self.started = time.monotonic() if started is None else started
        self.held: bytes = b""       # a late reply waiting for the next request
        self.counts: Dict[str, int] = {}

    def __call__(self, request: bytes, reply: Optional[bytes], now: float) -> bytes:
        """The bytes to put on the line for ``request`` whose correct answer is ``reply``."""
        slave = request[0]
        meter = self.meters.get(slave)
        outcome, wire = self._outcome(slave, reply, now)
        fields = {"slave": slave, "fc": request[1], "start": int.from_bytes(request[2:4], "big"),
                  "count": int.from_bytes(request[4:6], "big"), "outcome": outcome}
        if meter is not None and reply is not None and len(reply) > EXCEPTION_BYTES and reply[1] == request[1]:
            fields["values"] = served_values(meter, request, reply)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        self.log.record(**fields)
        return wire

    def _outcome(self, slave: int, reply: Optional[bytes], now: float) -> Tuple[str, bytes]:
        held, self.held = self.held, b""
        if reply is None:
            return (COLLISION if held else NO_METER), held
        if inside(self.offline.get(slave, ()), now - self.started):
            return (COLLISION if held else OFFLINE), held
        if held:
            return COLLISION, held + reply
        fault = self._draw()
        if fault is None:
            return (REFUSED if reply[1] & 0x80 else OK), reply
        return fault, self._apply(fault, slave, reply)

    def _draw(self) -> Optional[str]:
        """One draw per request, so at most one fault and a reproducible sequence."""
        point = self.rng.random()
        for name, probability in self.faults:
            if point < probability:
                return name
            point -= probability
        return None

    def _apply(self, fault: str, slave: int, reply: bytes) -> bytes:
        rng = self.rng
        if fault == "crc":
            wire = bytearray(reply)
            wire[rng.randrange(3, len(wire))] ^= rng.randint(1, 255)
            return bytes(wire)
        if fault == "silent":
            return b""
        if fault == "late":
            self.held = reply
            return b""
        if fault == "truncated":
            return reply[:rng.randint(1, len(reply) - 1)]
        if fault == "garbage":
            first = rng.choice([b for b in range(256) if b != slave])
            return bytes([first] + [rng.randrange(256) for _ in range(rng.randint(2, 11))]) + reply
        if fault == "exception":
            code = rng.choice((SLAVE_DEVICE_FAILURE, SLAVE_DEVICE_BUSY))
            return add_crc(struct.pack(">BBB", slave, (reply[1] & 0x7F) | 0x80, code))
        if fault == "wrong_id":
            other = rng.choice([n for n in range(1, 248) if n != slave])
            return add_crc(bytes([other]) + reply[1:-2])
        raise ValueError(f"unknown fault {fault!r}")


class PluggableLine:
    """A PtyLine that can be pulled out and plugged back at given times.

    Unplugging closes the pty (the gateway's reads fail) and removes the link;
    a new pty is opened at that moment, while the old one still holds its
    number, so it comes back on a new path, linked when the window ends.
    """

    def __init__(self, link: str, unplugged: Sequence[Window] = (), log: Optional[ServedLog] = None,
                 started: Optional[float] = None):
        self.link = link
        self.windows = list(unplugged)
        self.log = log or ServedLog(None)
        self.started = time.monotonic() if started is None else started
        self.line = PtyLine(link)
        self.spare: Optional[PtyLine] = None

    @property
    def slave_path(self) -> str:
        return self.line.slave_path

    def read(self, timeout: Optional[float]) -> bytes:
        window = inside(self.windows, time.monotonic() - self.started)
        if window is not None:
            self._unplug()
            remaining = self.started + window[1] - time.monotonic()
            time.sleep(max(0.0, remaining if timeout is None else min(timeout, remaining)))
            return b""
        self._replug()
        return self.line.read(timeout)

    def write(self, data: bytes) -> None:
        if self.spare is None:
            self.line.write(data)

    def baud(self) -> Optional[int]:
        return self.line.baud()

    def close(self) -> None:
        self.line.close()
        if self.spare is not None:
            self.spare.close()

    def _unplug(self) -> None:
        if self.spare is not None:
            return
        self.spare = PtyLine(self.link, publish=False)
        self.line.close()
        self.log.record(event="unplug", path=self.line.slave_path)

    def _replug(self) -> None:
        if self.spare is None:
            return
        self.line, self.spare = self.spare, None
        self.line.publish()
        self.log.record(event="replug", path=self.line.slave_path)
