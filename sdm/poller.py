"""The bus loop: schedule requests, exchange frames, decode, publish to the hub.

One poller owns one transport.  Each meter reads its planned blocks in turn
(a cycle): all of its values, or only the fast set between two reads of the
slow set, and no sooner than its poll interval allows (sdm/schedule.py).
Requests of different meters interleave: the poller always sends the request
whose meter is ready first, so one meter's quiet time after a reply is spent
talking to another.  A meter that keeps failing turns
unavailable and is re-probed with back-off; an adapter that fails is closed
and reopened with back-off while the HTTP side keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Sequence

from .framing import rtu
from .hub import AVAILABLE, UNAVAILABLE, Hub, MeterConfig
from .plan import Block, decode_block, make_block, one_per_request, plan, request_overhead_chars, split
from .schedule import Schedule, is_slow, next_due
from .transport import LineCost, TransportError

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
    pauses: Optional[Dict[str, float]] = None   # model key -> pause (s), overrides the model's
    schedules: Optional[Dict[int, Schedule]] = None   # meter id -> schedule; default: as fast as possible
    merge: bool = True            # False: one request per value, as gosdm630 did (for comparison)


class MeterReader:
    """One meter's schedule: its blocks, the cycle under way, failures and back-off."""

    def __init__(self, config: MeterConfig, char_time: float, settings: PollSettings):
        self.config = config
        self.settings = settings
        model = config.model
        self.pause = (settings.pauses or {}).get(model.key, model.pause)
        self.schedule = (settings.schedules or {}).get(config.device_id, Schedule())
        self._overhead = request_overhead_chars(LineCost(char_time), self.pause)
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
            log.warning("meter %d: block fc%d %d+%d refused; reading its %d values one by one",
                        self.device_id, block.fc, block.start, block.count, len(parts))
            blocks[index:index + 1] = parts
            self.pending.popleft()
            self.pending.extendleft(reversed(parts))
        else:
            log.warning("meter %d: has no %s (address %d refused); no longer read",
                        self.device_id, block.registers[0].name, block.start)
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
        log.error("meter %d: refuses every value of the %s table; is it really one?",
                  self.device_id, self.config.model.model)
        self.blocks = self.cycle_blocks = self._plan(self.config.model.registers)
        self.available = False
        self.pending.clear()
        self.ready_at += self.backoff


class Poller:
    """Reads every meter on one transport, continuously, and feeds the hub."""

    def __init__(self, hub: Hub, transport, settings: Optional[PollSettings] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.hub = hub
        self.transport = transport
        self.settings = settings or PollSettings()
        self.clock = clock
        self.sleep = sleep
        self.readers = [MeterReader(m.config, transport.char_time, self.settings) for m in hub.meters.values()]
        self._running = False
        self._reopen_delay = self.settings.reopen_min
        self._opened_before = False
        self._outage_logged = False
        hub.bus["Device"] = getattr(transport, "path", "")

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        self._running = True
        try:
            while self._running:
                if not self.transport.is_open and not self._reopen():
                    continue
                self._guarded_step()
        finally:
            self.transport.close()
            self.hub.bus["Connected"] = False

    def _guarded_step(self) -> None:
        """A step whose bug must not end polling for good (HTTP would serve frozen values)."""
        try:
            self.step()
        except Exception:
            log.exception("bus: poll step failed; polling goes on")
            self.sleep(1.0)

    def step(self) -> None:
        """Send the request of the meter that is ready first, and book the result."""
        reader = min(self.readers, key=lambda r: r.ready_at)
        now = self.clock()
        wait = reader.ready_at - now
        if wait > 0:
            self.sleep(min(wait, 0.5))   # wake up now and then to notice stop()
            return
        block = reader.next_block(now)
        try:
            registers = rtu.exchange(self.transport, reader.device_id, block.fc, block.start,
                                     block.count, self.settings.timeout)
        except rtu.ModbusError as err:
            self._book_failure(reader, block, err)
        except TransportError as err:
            self._adapter_lost(err)
        else:
            self._book_success(reader, block, registers)

    def _book_success(self, reader: MeterReader, block: Block, registers: Sequence[int]) -> None:
        values = decode_block(block, registers)
        self.hub.count(reader.device_id)
        log.debug("meter %d: fc%d %d+%d ok %s", reader.device_id, block.fc, block.start, block.count, values)
        was_available = reader.available
        complete = reader.succeeded(self.clock())
        self.hub.publish(reader.device_id, values, complete=complete)
        if not was_available:
            log.info("meter %d: answers again", reader.device_id)
            self.hub.set_status(reader.device_id, AVAILABLE)

    def _book_failure(self, reader: MeterReader, block: Block, err: rtu.ModbusError) -> None:
        self.hub.count(reader.device_id, err.kind)
        log.debug("meter %d: fc%d %d+%d failed: %s (%s)", reader.device_id, block.fc, block.start,
                  block.count, err, err.kind)
        was_available = reader.available
        reader.failed(block, err, self.clock())
        if was_available and not reader.available:
            log.warning("meter %d: %d failed exchanges in a row (last: %s); unavailable, re-probing",
                        reader.device_id, reader.failures, err)
            self.hub.set_status(reader.device_id, UNAVAILABLE)

    def _adapter_lost(self, err: TransportError) -> None:
        """Logged once per outage; every meter turns unavailable until the adapter is back."""
        log.error("bus: adapter lost (%s); reopening with back-off", err)
        self.transport.close()
        self.sleep(0)   # gevent closes the fd on its next loop turn; until then the port stays locked
        self.hub.bus["Connected"] = False
        self._outage_logged = True
        self._meters_unreachable()

    def _meters_unreachable(self) -> None:
        """Without an adapter no meter can answer: none is served as current."""
        for reader in self.readers:
            if reader.available:
                reader.lost_bus()
                self.hub.set_status(reader.device_id, UNAVAILABLE)

    def _reopen(self) -> bool:
        try:
            self.transport.open()
        except TransportError as err:
            if not self._outage_logged:
                log.error("bus: %s; retrying with back-off", err)
                self._outage_logged = True
                self._meters_unreachable()
            else:
                log.debug("bus: %s; next attempt in %.1f s", err, self._reopen_delay)
            self.sleep(self._reopen_delay)
            self._reopen_delay = min(self._reopen_delay * 2, self.settings.reopen_max)
            return False
        if self._opened_before:
            self.hub.bus["Reconnects"] += 1
            log.info("bus: %s open again", self.transport.path)
        self._opened_before = True
        self._outage_logged = False
        self.hub.bus["Connected"] = True
        self._reopen_delay = self.settings.reopen_min
        for reader in self.readers:
            reader.ready_at = 0.0     # probe every meter at once
        return True
