"""The bus loop: schedule requests, exchange frames, decode, publish to the hub.

One poller owns one bus: its link (transport and framing) and its meters.  Each meter reads its planned blocks in turn
(a cycle): all of its values, or only the fast set between two reads of the
slow set, and no sooner than its poll interval allows (sdm/schedule.py).
Requests of different meters interleave: the poller always sends the request
whose meter is ready first, so one meter's quiet time after a reply is spent
talking to another.  A meter that keeps failing turns
unavailable and is re-probed with back-off; an adapter that fails is closed
and reopened with back-off while the HTTP side keeps serving.

The poller only calls its :class:`Sink` (publish, count, set_status,
bus_state): the hub itself when it runs on the hub's thread (tests), or a
:class:`sdm.bus.LoopSink` when it runs in a bus thread of its own.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Mapping, Optional, Protocol, Sequence

from .cache import RegisterCache
from .config import DEFAULT_BUS_NAME, MeterConfig
from .encoding import decode
from .forward import ForwardedWrite
from .framing import rtu
from .hub import AVAILABLE, UNAVAILABLE
from .plan import Block, make_block, one_per_request, plan, request_overhead_chars, split
from .readings import finite_or_none
from .schedule import Schedule, is_slow, next_due
from .transport import LineCost, Link, TransportError

log = logging.getLogger(__name__)


@dataclass
class PollSettings:
    timeout: float = 0.3          # meter turnaround allowed per exchange, beyond wire time
    retries: int = 2              # extra attempts of a failed block within one cycle
    max_failures: int = 5         # consecutive failed exchanges that make a meter unavailable
    reprobe_min: float = 1.0      # first re-probe delay of an unavailable meter (s)
    reprobe_max: float = 60.0     # back-off ceiling (s)
    reopen_min: float = 0.5       # first retry delay after the adapter failed (s)
    reopen_max: float = 10.0
    # Overrides for tests and benchmarks; a gateway configures pause and schedule per meter.
    pauses: Optional[Dict[str, float]] = None   # model key -> pause (s), overrides the model's
    schedules: Optional[Dict[int, Schedule]] = None   # meter id -> schedule
    merge: bool = True            # False: one request per value, as gosdm630 did (for comparison)


class Sink(Protocol):
    """Where a poller reports: the hub's writing side, keyed by meter name and bus name."""

    def publish(self, name: str, values: Mapping[str, Optional[float]],
                timestamp: Optional[float] = None, complete: bool = False) -> None: ...
    def count(self, name: str, error_kind: Optional[str] = None) -> None: ...
    def set_status(self, name: str, status: str) -> None: ...
    def bus_state(self, bus: str, connected: bool, reopened: bool = False,
                  hint: Optional[str] = None, listen: Optional[Mapping[str, object]] = None) -> None: ...


def pause_of(config: MeterConfig, settings: PollSettings) -> float:
    """The quiet time a meter needs before its next request: configured, overridden, or the model's."""
    override = (settings.pauses or {}).get(config.model.key)
    if override is not None:
        return override
    return config.model.pause if config.pause is None else config.pause


def schedule_of(config: MeterConfig, settings: PollSettings) -> Schedule:
    if settings.schedules is not None:
        return settings.schedules.get(config.device_id, Schedule())
    return Schedule(config.interval, config.slow)


def decode_block(block: Block, registers: Sequence[int]) -> Dict[str, Optional[float]]:
    """Values of every measurement in a block; NaN and infinities become None."""
    values = {}
    for reg in block.registers:
        offset = block.offset(reg)
        values[reg.name] = finite_or_none(decode(registers[offset:offset + reg.width], reg.encoding))
    return values


class MeterReader:
    """One meter's schedule: its blocks, the cycle under way, failures and back-off."""

    def __init__(self, config: MeterConfig, cost: LineCost, settings: PollSettings):
        self.config = config
        self.settings = settings
        model = config.model
        self.pause = pause_of(config, settings)
        self.schedule = schedule_of(config, settings)
        self._overhead = request_overhead_chars(cost, self.pause)
        self.blocks: List[Block] = self._plan(model.registers)   # every value
        fast = [reg for reg in model.registers if not is_slow(reg.name)]
        # The fast set alone, for the cycles between two reads of the slow set.
        self.fast_blocks: Optional[List[Block]] = (
            self._plan(fast) if self.schedule.slow_interval and 0 < len(fast) < len(model.registers) else None)
        self.cycle_blocks = self.blocks   # the plan of the cycle under way
        self.probe_block = make_block([model.register(model.probe)])
        self.pending: Deque[Block] = deque()
        self.attempts = 0             # attempts of the block at the head of pending
        self.failures = 0             # consecutive failed exchanges
        self.available = True
        self.ready_at = 0.0           # monotonic time the next request may go out
        self.cycle_due = 0.0          # when the cycle under way (or the next) is due to start
        self.slow_due = 0.0           # when the slow set is due to be read again
        self.backoff = settings.reprobe_min

    def _plan(self, regs) -> List[Block]:
        """The requests of a cycle, shortest first: after a start the first values come soonest."""
        if not self.settings.merge:
            return one_per_request(regs)
        return sorted(plan(regs, self.config.model.max_registers, self._overhead), key=lambda b: b.count)

    @property
    def device_id(self) -> int:
        return self.config.device_id

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def label(self) -> str:
        """How log lines name the meter: ``bus cabinet, meter house (id 1)``."""
        return f"bus {self.config.bus}, meter {self.config.name} (id {self.config.device_id})"

    def next_block(self, now: float) -> Block:
        if not self.available:
            return self.probe_block
        if not self.pending:
            self._start_cycle(now)
        return self.pending[0]

    def _start_cycle(self, now: float) -> None:
        self.cycle_due = next_due(self.cycle_due, now, self.schedule.interval)   # the next one's
        if self.fast_blocks is None or now >= self.slow_due:
            self.cycle_blocks = self.blocks
            self.slow_due = next_due(self.slow_due, now, self.schedule.slow_interval)
        else:
            self.cycle_blocks = self.fast_blocks
        self.pending.extend(self.cycle_blocks)

    def _done(self) -> bool:
        """Drop the block just finished; True when that ended the cycle."""
        self.pending.popleft()
        if self.pending:
            return False
        self.ready_at = max(self.ready_at, self.cycle_due)
        return True

    def succeeded(self, now: float) -> bool:
        """Book a good reply; True when it completed a cycle."""
        self.failures = 0
        self.attempts = 0
        self.ready_at = now + self.pause
        if not self.available:
            self.available = True
            self.backoff = self.settings.reprobe_min
            self.pending.clear()
            return False
        return self._done()

    def failed(self, block: Block, error: rtu.ModbusError, now: float) -> None:
        """Book a failed exchange: fall back, retry, skip, or give the meter up."""
        self.ready_at = now + self.pause
        if isinstance(error, rtu.ExceptionReply) and error.code == rtu.ILLEGAL_DATA_ADDRESS and self.available:
            self._refused(block)
            return
        self.failures += 1
        if not self.available:
            self.ready_at = now + self.backoff
            self.backoff = min(self.backoff * 2, self.settings.reprobe_max)
            return
        if self.failures >= self.settings.max_failures:
            self.available = False
            self.pending.clear()
            self.attempts = 0
            self.ready_at = now + self.backoff
            return
        self.attempts += 1
        if self.attempts > self.settings.retries:
            self.attempts = 0
            self._done()

    def lost_bus(self) -> None:
        """The adapter is gone: nothing this meter said can be refreshed; probe it when it is back."""
        self.available = False
        self.pending.clear()
        self.attempts = 0
        self.failures = 0
        self.backoff = self.settings.reprobe_min

    def _refused(self, block: Block) -> None:
        """The meter said 'illegal data address': read the block's values one by one,
        or stop asking for a single value it does not have; remembered for good
        (by the plan under way: the other plan learns it when it meets the block)."""
        blocks = self.cycle_blocks
        index = blocks.index(block)
        if len(block.registers) > 1:
            parts = split(block)
            log.warning("%s: block fc%d %d+%d refused; reading its %d values one by one",
                        self.label, block.fc, block.start, block.count, len(parts))
            blocks[index:index + 1] = parts
            self.pending.popleft()
            self.pending.extendleft(reversed(parts))
        else:
            log.warning("%s: has no %s (address %d refused); no longer read",
                        self.label, block.registers[0].name, block.start)
            del blocks[index]
            self._done()
            if not blocks:
                self._plan_emptied(blocks)

    def _plan_emptied(self, blocks: List[Block]) -> None:
        """Every value of a plan was refused.  An empty fast set means: read everything every
        cycle.  An empty full plan means the meter is not what it was configured as: it is
        given up (re-probed with back-off) and will be asked for its whole table again."""
        if blocks is self.fast_blocks:
            self.fast_blocks = None
            return
        log.error("%s: refuses every value of the %s table; is it really one?",
                  self.label, self.config.model.model)
        self.blocks = self.cycle_blocks = self._plan(self.config.model.registers)
        self.available = False
        self.pending.clear()
        self.ready_at += self.backoff


class Poller:
    """Reads every meter of one bus through its link, continuously, and reports to a sink."""

    def __init__(self, sink: Sink, link: Link, meters: Sequence[MeterConfig],
                 settings: Optional[PollSettings] = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, bus: Optional[str] = None,
                 cache: Optional[RegisterCache] = None):
        self.sink = sink
        self.cache = cache            # every good reply's registers, for the Modbus servers
        self.writes: Deque[ForwardedWrite] = deque()   # served clients' writes, sent between reads
        self.link = link
        self.bus = bus or (meters[0].bus if meters else DEFAULT_BUS_NAME)
        self.settings = settings or PollSettings()
        self.clock = clock
        self.sleep = sleep
        self.readers = [MeterReader(config, link.cost, self.settings) for config in meters]
        self._running = False
        self._reopen_delay = self.settings.reopen_min
        self._opened_before = False
        self._outage_logged = False
        self._hint: Optional[str] = None

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        self._running = True
        try:
            while self._running:
                if not self.link.is_open and not self.reopen():
                    continue
                self._guarded_step()
        finally:
            self.link.close()
            self.sink.bus_state(self.bus, False)

    def _guarded_step(self) -> None:
        """A step whose bug must not end polling for good (HTTP would serve frozen values)."""
        try:
            self.step()
        except Exception:
            log.exception("bus %s: poll step failed; polling goes on", self.bus)
            self.sleep(1.0)

    def step(self) -> None:
        """Send the request of the meter that is ready first, and book the result."""
        if self.writes:
            self._forward(self.writes.popleft())
            return
        reader = min(self.readers, key=lambda r: r.ready_at)
        now = self.clock()
        wait = reader.ready_at - now
        if wait > 0:
            self.sleep(min(wait, 0.5))   # wake up now and then to notice stop()
            return
        block = reader.next_block(now)
        try:
            registers = self.link.exchange(reader.device_id, block.fc, block.start, block.count,
                                           self.settings.timeout)
        except rtu.ModbusError as err:
            self._book_failure(reader, block, err)
        except TransportError as err:
            self._adapter_lost(err)
        else:
            self._book_success(reader, block, registers)
        self._report_hint()

    def _forward(self, write: ForwardedWrite) -> None:
        """A served client's write, after the meter's pause; logged with the client's address."""
        reader = next((r for r in self.readers if r.device_id == write.device_id), None)
        if reader is not None:
            wait = reader.ready_at - self.clock()
            if wait > 0:
                self.sleep(wait)
        write.execute(self.link, self.settings.timeout)
        outcome = "ok" if not write.error else f"exception {write.error}"
        log.info("bus %s, meter id %d: write of %d registers at %d from %s forwarded: %s", self.bus,
                 write.device_id, len(write.words), write.start, write.client, outcome)
        if reader is not None:
            reader.ready_at = self.clock() + reader.pause

    def _book_success(self, reader: MeterReader, block: Block, registers: Sequence[int]) -> None:
        if self.cache is not None:
            self.cache.store(self.bus, reader.device_id, block.fc, block.start, registers, self.clock())
        values = decode_block(block, registers)
        self.sink.count(reader.name)
        log.debug("%s: fc%d %d+%d ok %s", reader.label, block.fc, block.start, block.count, values)
        was_available = reader.available
        complete = reader.succeeded(self.clock())
        self.sink.publish(reader.name, values, time.time(), complete)
        if not was_available:
            log.info("%s: answers again", reader.label)
            self.sink.set_status(reader.name, AVAILABLE)

    def _book_failure(self, reader: MeterReader, block: Block, err: rtu.ModbusError) -> None:
        self.sink.count(reader.name, err.kind)
        log.debug("%s: fc%d %d+%d failed: %s (%s)", reader.label, block.fc, block.start,
                  block.count, err, err.kind)
        was_available = reader.available
        reader.failed(block, err, self.clock())
        if was_available and not reader.available:
            log.warning("%s: %d failed exchanges in a row (last: %s); unavailable, re-probing",
                        reader.label, reader.failures, err)
            self.sink.set_status(reader.name, UNAVAILABLE)

    def _report_hint(self) -> None:
        """Pass on what the link suspects (a gateway in the wrong mode), once per change."""
        hint = getattr(self.link, "hint", None)
        if hint != self._hint:
            self._hint = hint
            if hint:
                log.error("bus %s: %s", self.bus, hint)
            self.sink.bus_state(self.bus, self.link.is_open, hint=hint or "")

    def _adapter_lost(self, err: TransportError) -> None:
        """Logged once per outage; every meter turns unavailable until the adapter is back."""
        log.error("bus %s: adapter lost (%s: %s); reopening with back-off", self.bus, self.link.port, err)
        self.link.close()
        self.sink.bus_state(self.bus, False)
        self._outage_logged = True
        self._meters_unreachable()

    def _meters_unreachable(self) -> None:
        """Without an adapter no meter can answer: none is served as current."""
        for reader in self.readers:
            if reader.available:
                reader.lost_bus()
                self.sink.set_status(reader.name, UNAVAILABLE)

    def reopen(self) -> bool:
        """Open the link (with back-off after a failure); True once it is open."""
        try:
            self.link.open()
        except TransportError as err:
            if not self._outage_logged:
                log.error("bus %s: %s; retrying with back-off", self.bus, err)
                self._outage_logged = True
                self._meters_unreachable()
            else:
                log.debug("bus %s: %s; next attempt in %.1f s", self.bus, err, self._reopen_delay)
            self.sleep(self._reopen_delay)
            self._reopen_delay = min(self._reopen_delay * 2, self.settings.reopen_max)
            return False
        if self._opened_before:
            log.info("bus %s: %s open again", self.bus, self.link.port)
        self.sink.bus_state(self.bus, True, reopened=self._opened_before)
        self._opened_before = True
        self._outage_logged = False
        self._reopen_delay = self.settings.reopen_min
        for reader in self.readers:
            reader.ready_at = 0.0     # probe every meter at once
        return True
