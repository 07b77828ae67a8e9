"""A virtual RS485 multi-drop bus: several pty endpoints, the meters and a foreign master on one line.

Every byte one participant sends reaches all the others at the line rate:
a chunk written at ``t`` occupies the wire from ``t`` (or from the end of the
sender's previous chunk) for its length in character times, and is handed to
the others when its last character has crossed.  Two senders whose chunks
overlap garble each other (a collision): the overlapping bytes reach every
listener as the XOR of both, as a line driven from two ends would carry
neither.  Each participant's sent bytes are counted (``--bus-counts``).

The foreign master (:class:`ForeignMaster`) polls one meter like a PV
inverter does: a few blocks in turn, at a fixed rate, with its own timeout
and one retry; SIGUSR2 pauses and resumes it.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from sdm.framing.rtu import build_request, crc_ok, reply_bytes
from sdm.meters.model import MeterModel
from sdm.meters.registry import lookup
from sdm.plan import plan
from sdm.transport import silence_time

from .line import PtyLine

log = logging.getLogger(__name__)

# What a PV inverter asks an SDM630 for (a few blocks, not the whole map): voltages, currents and
# phase powers; total power; frequency and the two energy counters.
INVERTER_BLOCKS: Dict[str, List[Tuple[int, int, int]]] = {
    "sdm630": [(0x04, 0x0000, 18), (0x04, 0x0034, 2), (0x04, 0x0046, 6)],
}


@dataclass
class Chunk:
    sender: Participant
    data: bytearray
    start: float
    end: float
    seq: int = 0

    def __lt__(self, other: Chunk) -> bool:
        return (self.end, self.seq) < (other.end, other.seq)


@dataclass(eq=False)
class Participant:
    """One station on the wire: a pty endpoint or a simulator-internal line."""

    name: str
    sent: int = 0
    busy_until: float = 0.0
    inbox: List[bytes] = field(default_factory=list)
    wake: threading.Condition = field(default_factory=threading.Condition)
    fd: Optional[int] = None          # a pty master: delivered bytes are written there

    def deliver(self, data: bytes) -> None:
        if self.fd is not None:
            try:
                os.write(self.fd, data)
            except (BlockingIOError, OSError):
                pass                   # nobody reads this endpoint: the bytes are lost, as on a line
            return
        with self.wake:
            self.inbox.append(data)
            self.wake.notify()


class Wire:
    """The line: schedules every chunk at the line rate, garbles overlaps, delivers to the others."""

    def __init__(self, char_time: float):
        self.char_time = char_time
        self.participants: List[Participant] = []
        self.collisions = 0
        self._pending: List[Chunk] = []
        self._seq = 0
        self._cond = threading.Condition()
        self.running = True

    def join(self, participant: Participant) -> Participant:
        self.participants.append(participant)
        return participant

    def transmit(self, sender: Participant, data: bytes, at: float) -> None:
        with self._cond:
            start = max(at, sender.busy_until)
            end = start + len(data) * self.char_time
            sender.busy_until = end
            sender.sent += len(data)
            chunk = Chunk(sender, bytearray(data), start, end, self._seq)
            self._seq += 1
            for other in self._pending:
                if other.sender is not sender and other.start < end and start < other.end:
                    self._garble(other, chunk)
            heapq.heappush(self._pending, chunk)
            self._cond.notify()

    def _garble(self, first: Chunk, second: Chunk) -> None:
        """Both chunks' overlapping characters become the XOR of the two (never a clean frame)."""
        self.collisions += 1
        lo, hi = max(first.start, second.start), min(first.end, second.end)
        for chunk, other in ((first, second), (second, first)):
            for index in range(len(chunk.data)):
                at = chunk.start + (index + 0.5) * self.char_time
                if lo <= at < hi:
                    other_index = min(int((at - other.start) / self.char_time), len(other.data) - 1)
                    chunk.data[index] ^= other.data[other_index] ^ 0x55

    def run(self) -> None:
        """Hand every chunk over when its last character has crossed the wire."""
        while self.running:
            with self._cond:
                if not self._pending:
                    self._cond.wait(0.2)
                    continue
                wait = self._pending[0].end - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                chunk = heapq.heappop(self._pending)
            for participant in self.participants:
                if participant is not chunk.sender:
                    participant.deliver(bytes(chunk.data))

    def counts(self) -> Dict[str, object]:
        return {"char_time": self.char_time, "collisions": self.collisions,
                "sent": {p.name: p.sent for p in self.participants}}


class InternalLine:
    """A simulator-internal station's line (the meters' slave loop, the foreign master): read what
    the wire delivered, write after the MODBUS silence."""

    def __init__(self, wire: Wire, name: str):
        self.wire = wire
        self.me = wire.join(Participant(name))

    def read(self, timeout: Optional[float]) -> bytes:
        with self.me.wake:
            if not self.me.inbox:
                self.me.wake.wait(timeout)
            data = b"".join(self.me.inbox)
            self.me.inbox.clear()
        return data

    def write(self, data: bytes) -> None:
        self.wire.transmit(self.me, data, time.monotonic() + silence_time(self.wire.char_time))

    def close(self) -> None:
        pass


class PtyEndpoints:
    """``count`` pty endpoints on the wire: ``link`` itself, then ``link.2``, ``link.3``, ..."""

    def __init__(self, wire: Wire, link: str, count: int):
        self.wire = wire
        self.lines = [PtyLine(link if number == 1 else f"{link}.{number}") for number in range(1, count + 1)]
        self.stations: Dict[int, Participant] = {}
        for line in self.lines:
            os.set_blocking(line.master, False)
            self.stations[line.master] = wire.join(Participant(line.link, fd=line.master))
        self.running = True

    def run(self) -> None:
        """Put what each endpoint's user writes on the wire."""
        while self.running:
            ready = select.select(list(self.stations), [], [], 0.2)[0]
            now = time.monotonic()
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                if data:
                    self.wire.transmit(self.stations[fd], data, now)

    def close(self) -> None:
        self.running = False
        for line in self.lines:
            line.close()


def parse_master(text: str) -> Tuple[MeterModel, int, float]:
    """``sdm630:1@14`` -> (model, id, requests per second); ValueError names the form."""
    try:
        device, _, rate = text.partition("@")
        keyword, _, slave = device.partition(":")
        model, slave_id, per_second = lookup(keyword), int(slave), float(rate or "14")
    except ValueError as err:
        raise ValueError(f"--master {text!r}: expected TYPE:ID@RATE, e.g. sdm630:1@14 ({err})") from None
    if not (1 <= slave_id <= 247 and 0 < per_second <= 100):
        raise ValueError(f"--master {text!r}: id 1-247 and 0 < RATE <= 100 requests a second")
    return model, slave_id, per_second


def master_blocks(model: MeterModel) -> List[Tuple[int, int, int]]:
    """The blocks an inverter would read: a fixed choice for the SDM630, else the model's first
    three planned requests."""
    if model.key in INVERTER_BLOCKS:
        return INVERTER_BLOCKS[model.key]
    return [(b.fc, b.start, b.count) for b in plan(model.registers, model.max_registers)[:3]]


class ForeignMaster:
    """An inverter-like master on the wire: one request per 1/rate s, a timeout and one retry."""

    def __init__(self, line: InternalLine, slave: int, blocks: Sequence[Tuple[int, int, int]], rate: float,
                 timeout: float = 0.1, retries: int = 1):
        self.line = line
        self.slave = slave
        self.blocks = list(blocks)
        self.period = 1.0 / rate
        self.timeout = timeout
        self.retries = retries
        self.running = True
        self.paused = threading.Event()
        self.stats = {"requests": 0, "good": 0, "timeouts": 0, "bad": 0}

    def toggle(self) -> None:
        if self.paused.is_set():
            self.paused.clear()
            log.info("foreign master resumed")
        else:
            self.paused.set()
            log.info("foreign master paused")

    def run(self) -> None:
        due = time.monotonic()
        turn = 0
        while self.running:
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            due = max(due + self.period, time.monotonic() - self.period)
            if self.paused.is_set():
                continue
            fc, start, count = self.blocks[turn % len(self.blocks)]
            turn += 1
            for _ in range(1 + self.retries):
                if self._exchange(fc, start, count):
                    break

    def _exchange(self, fc: int, start: int, count: int) -> bool:
        self.line.read(0)                                  # forget stray bytes
        request = build_request(self.slave, fc, start, count)
        self.line.write(request)
        self.stats["requests"] += 1
        wire = self.line.wire.char_time
        deadline = time.monotonic() + silence_time(wire) + (len(request) + reply_bytes(count)) * wire + self.timeout
        reply = b""
        while len(reply) < reply_bytes(count) and time.monotonic() < deadline:
            reply += self.line.read(max(0.0, deadline - time.monotonic()))
        if not reply:
            self.stats["timeouts"] += 1
            return False
        good = (len(reply) == reply_bytes(count) and crc_ok(reply) and reply[:3] == bytes((self.slave, fc, 2 * count)))
        self.stats["good" if good else "bad"] += 1
        return good


class MultiDrop:
    """The wire, its pty endpoints, the meters' line and the optional foreign master, as threads."""

    def __init__(self, link: str, endpoints: int, char_time: float, master: Optional[str],
                 counts_path: Optional[str]):
        self.wire = Wire(char_time)
        self.endpoints = PtyEndpoints(self.wire, link, endpoints)
        self.meters_line = InternalLine(self.wire, "meters")
        self.master: Optional[ForeignMaster] = None
        if master:
            model, slave, rate = parse_master(master)
            self.master = ForeignMaster(InternalLine(self.wire, "master"), slave, master_blocks(model), rate)
        self.counts_path = counts_path
        self.slave_path = ", ".join(line.slave_path for line in self.endpoints.lines)

    def start(self) -> MultiDrop:
        runs = [self.wire.run, self.endpoints.run, self._write_counts]
        runs += [self.master.run] if self.master else []
        for run in runs:
            threading.Thread(target=run, daemon=True).start()
        return self

    def _write_counts(self) -> None:
        while self.wire.running and self.counts_path:
            write_counts(self.counts_path, self.wire, self.master)
            time.sleep(0.1)

    def close(self) -> None:
        if self.counts_path:
            write_counts(self.counts_path, self.wire, self.master)
        self.wire.running = False
        if self.master:
            self.master.running = False
        self.endpoints.close()


def write_counts(path: str, wire: Wire, master: Optional[ForeignMaster]) -> None:
    """The wire's byte counts (and the master's outcomes), written whole and renamed."""
    counts = wire.counts()
    if master is not None:
        counts["master"] = dict(master.stats, paused=master.paused.is_set())
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(counts, out)
    os.replace(tmp, path)
