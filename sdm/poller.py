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
from .forward import ForwardedWrite, Writer
from .framing import rtu
from .hub import AVAILABLE, UNAVAILABLE
from .meters.model import Register
from .plan import Block, decode_block, make_block, one_per_request, plan, request_overhead_chars, split
from .schedule import Schedule, is_slow, next_due
from .timing import MIN_TIMEOUT, MeterTiming, TimingFile, meter_key, percentile, restore_timing
from .transport import LineCost, Link, TransportError, silence_time

log = logging.getLogger(__name__)

TIMING_REPORT_INTERVAL = 2.0   # s between two timing reports of a meter to the sink (when they changed)
TIMING_SAVE_INTERVAL = 300.0   # s between two writes of the timing state file (when it changed; and at stop):
                               # few writes for an SD card, at most five minutes of learning lost to a crash
REPLAN_SHARE = 0.10            # re-plan when a request's fixed cost moved by more than this share


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
    def drop(self, name: str, names: Sequence[str]) -> None: ...
    def timing(self, name: str, figures: Mapping[str, object]) -> None: ...
    def bus_state(self, bus: str, connected: bool, reopened: bool = False,
                  hint: Optional[str] = None, listen: Optional[Mapping[str, object]] = None) -> None: ...


def pause_of(config: MeterConfig, settings: PollSettings) -> float:
    """The quiet time a meter needs before its next request: configured, overridden, or the model's."""
    fixed = fixed_pause_of(config, settings)
    return config.model.pause if fixed is None else fixed


def fixed_pause_of(config: MeterConfig, settings: PollSettings) -> Optional[float]:
    """The pause a user (or a benchmark's override) fixed for a meter; None: the poller learns it."""
    override = (settings.pauses or {}).get(config.model.key)
    return config.pause if override is None else override


def timing_of(config: MeterConfig, cost: LineCost, settings: PollSettings) -> MeterTiming:
    """A meter's timing at start: the configured timeout as ceiling, the line's needs as floor."""
    floor = MIN_TIMEOUT + cost.round_trip + silence_time(cost.char_time)
    ceiling = settings.timeout
    return MeterTiming(pause_of(config, settings), ceiling, floor, fixed_pause_of(config, settings))


def schedule_of(config: MeterConfig, settings: PollSettings) -> Schedule:
    if settings.schedules is not None:
        return settings.schedules.get(config.device_id, Schedule())
    return Schedule(config.interval, config.slow)


# A block a meter refused is asked for whole again after this long, then twice as long after each
# new refusal, up to REPLAN_MAX: one garbled "illegal data address" must not cost values until the
# next restart, and a register a meter really lacks costs one refused request per REPLAN_MAX.
REPLAN_MIN = 30.0
REPLAN_MAX = 3600.0


class MeterReader:
    """One meter's schedule: its blocks, the cycle under way, failures and back-off."""

    def __init__(self, config: MeterConfig, cost: LineCost, settings: PollSettings):
        self.config = config
        self.settings = settings
        model = config.model
        self.cost = cost
        self.timing = timing_of(config, cost, settings)
        self.schedule = schedule_of(config, settings)
        self._overhead = self._overhead_now()
        self._refusals = False        # a block was refused: the plans hold that, so keep them
        self.ended_at: Optional[float] = None   # when this meter's last exchange ended
        self.blocks: List[Block] = []
        self.fast_blocks: Optional[List[Block]] = None
        self._make_plans()
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
        self.replan_at: Optional[float] = None   # when refused blocks are asked for whole again
        self.replan_delay = REPLAN_MIN
        self.dropped: List[str] = []             # values just given up, for the poller to null

    def _make_plans(self) -> None:
        """Every value's blocks, and the fast set's alone for the cycles between two reads of the slow set."""
        registers = self.config.model.registers
        self.blocks = self._plan(registers)
        fast = [reg for reg in registers if not is_slow(reg.name)]
        self.fast_blocks = (
            self._plan(fast) if self.schedule.slow_interval and 0 < len(fast) < len(registers) else None)

    @property
    def pause(self) -> float:
        return self.timing.pause

    def _overhead_now(self) -> float:
        """A request's fixed cost in characters, with the learned pause and typical turnaround."""
        turnaround = percentile(self.timing.samples, 0.5) or 0.0
        return request_overhead_chars(self.cost, self.timing.pause, turnaround)

    def replan_if_moved(self) -> None:
        """Re-plan when the learned figures moved a request's cost enough to matter."""
        overhead = self._overhead_now()
        if self._refusals or abs(overhead - self._overhead) <= REPLAN_SHARE * self._overhead:
            return
        before = len(self.blocks)
        self._overhead = overhead
        self._make_plans()
        if len(self.blocks) != before:
            log.info("%s: %d requests per reading instead of %d (pause %.0f ms, turnaround %.0f ms)",
                     self.label, len(self.blocks), before, self.timing.pause * 1000,
                     (percentile(self.timing.samples, 0.5) or 0.0) * 1000)

    def _plan(self, regs: Sequence[Register]) -> List[Block]:
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
        if self.replan_at is not None and now >= self.replan_at:
            log.info("%s: asking again for the blocks it refused", self.label)
            self.replan_at = None
            self._refusals = False
            self._make_plans()
        self.replan_if_moved()
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
        if self.replan_at is None:
            self.replan_delay = REPLAN_MIN    # a whole cycle without a refusal
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
            self._refused(block, now)
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

    def _refused(self, block: Block, now: float) -> None:
        """The meter said 'illegal data address': read the block's values one by one,
        or stop asking for a single value it does not have (its value is null from now on).
        Remembered by the plan under way (the other plan learns it when it meets the block)
        until the plans are made afresh after a back-off (REPLAN_MIN .. REPLAN_MAX)."""
        if self.replan_at is None:
            self.replan_at = now + self.replan_delay
            self.replan_delay = min(self.replan_delay * 2, REPLAN_MAX)
        self._refusals = True
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
            log.warning("%s: has no %s (address %d refused); null until asked again in %g s",
                        self.label, block.registers[0].name, block.start, self.replan_at - now)
            self.dropped.append(block.registers[0].name)
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
                 timing_file: Optional[TimingFile] = None, cache: Optional[RegisterCache] = None):
        self.sink = sink
        self.cache = cache            # every good reply's registers, for the Modbus servers
        self.writes: Deque[ForwardedWrite] = deque()   # served clients' writes, sent between reads
        self.link = link
        self.bus = bus or (meters[0].bus if meters else DEFAULT_BUS_NAME)
        self.settings = settings or PollSettings()
        self.clock = clock
        self.sleep = sleep
        self.readers = [MeterReader(config, link.cost, self.settings) for config in meters]
        self.timing_file = timing_file
        for reader in self.readers:
            if timing_file is not None:
                restore_timing(reader.timing, timing_file.entry(self.bus, reader.device_id,
                                                                reader.config.model.key), reader.label, clock)
            reader.replan_if_moved()
        self._timing_reported: Dict[str, Dict[str, object]] = {}
        self._timing_report_due = 0.0
        self._timing_saved: Dict[str, Dict[str, object]] = {}
        self._timing_save_due = clock() + TIMING_SAVE_INTERVAL
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
            self.save_timing()

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
        gap = None if reader.ended_at is None else now - reader.ended_at
        try:
            registers = self.link.exchange(reader.device_id, block.fc, block.start, block.count,
                                           reader.timing.timeout)
        except rtu.ModbusError as err:
            reader.ended_at = self.clock()
            reader.timing.failed(err.kind, gap, reader.ended_at)
            self._book_failure(reader, block, err)
        except TransportError as err:
            reader.ended_at = None
            self._adapter_lost(err)
        else:
            reader.ended_at = self.clock()
            reader.timing.answered(getattr(self.link, "turnaround", None), gap, reader.ended_at)
            self._book_success(reader, block, registers)
        self._report_hint()
        self._report_timing(reader.ended_at or now)

    def _report_timing(self, now: float) -> None:
        """Every meter's timing to the sink now and then (when it changed), and to the state file."""
        if now >= self._timing_report_due:
            self._timing_report_due = now + TIMING_REPORT_INTERVAL
            for reader in self.readers:
                figures = reader.timing.summary()
                if self._timing_reported.get(reader.name) != figures:
                    self._timing_reported[reader.name] = figures
                    self.sink.timing(reader.name, figures)
        if now >= self._timing_save_due:
            self._timing_save_due = now + TIMING_SAVE_INTERVAL
            self.save_timing()

    def save_timing(self) -> None:
        """Write what changed since the last write to the state file (if there is one)."""
        if self.timing_file is None:
            return
        entries = {meter_key(self.bus, r.device_id): {"model": r.config.model.key, **r.timing.to_state()}
                   for r in self.readers}
        changed = {key: entry for key, entry in entries.items() if self._timing_saved.get(key) != entry}
        if changed:
            self.timing_file.save(changed)
            self._timing_saved.update(changed)

    def _forward(self, write: ForwardedWrite) -> None:
        """A served client's write, after the meter's pause; logged with the client's address."""
        reader = next((r for r in self.readers if r.device_id == write.device_id), None)
        if reader is not None:
            wait = reader.ready_at - self.clock()
            if wait > 0:
                self.sleep(wait)
        if isinstance(self.link, Writer):
            write.execute(self.link, self.settings.timeout)
        else:       # the configuration forwards writes only on serial buses; anything else is refused
            write.refuse()
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
        if reader.dropped:
            self.sink.drop(reader.name, reader.dropped)
            reader.dropped = []
        if was_available and not reader.available:
            log.warning("%s: %d failed exchanges in a row (last: %s); unavailable, re-probing",
                        reader.label, reader.failures, err)
            self.sink.set_status(reader.name, UNAVAILABLE)

    def _report_hint(self) -> None:
        """Pass on what the link suspects (a gateway in the wrong mode), once per change."""
        hint = self.link.hint
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
