"""The recorder of sdm630_logger: follows a gateway's firehose and stores its values in the SQLite
file in batches; and the TSV export of that file."""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from contextlib import contextmanager
from types import FrameType
from typing import Callable, Iterator, List, Optional, Sequence, TextIO, TypeVar

from .follow import Follower, FollowError, local_time
from .store import Reader, Sample, Writer

log = logging.getLogger("sdm630_logger")    # the program's name: its log lines read as before

MAX_PENDING = 10_000          # values that force a store before the interval is over
MAX_KEPT = 500_000            # values kept while the file cannot be written; the oldest go first
BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
T = TypeVar("T")


class Stop(Exception):
    """SIGTERM or SIGINT arrived while the recorder was waiting."""


class Recorder:
    """Follows the firehose, keeps values in memory, stores them in one transaction per interval."""

    def __init__(self, writer: Writer, follower: Follower, interval: float):
        self.writer = writer
        self.follower = follower
        self.interval = interval
        self.pending: List[Sample] = []
        self.stopping = False
        self._waiting = False
        self._backoff = BACKOFF_MIN
        self._lost = False

    def on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self.stopping = True
        if self._waiting:
            raise Stop()

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Only a wait (a long poll, a back-off sleep) is cut short by a signal; storing never is."""
        self._waiting = True
        try:
            if self.stopping:
                raise Stop()
            yield
        finally:
            self._waiting = False

    def wait_for(self, action: Callable[[], T]) -> T:
        with self._interruptible():
            return action()

    def run(self) -> bool:
        """Record until stopped; False if values were left that could not be stored."""
        self._first_contact()
        next_store = time.monotonic() + self.interval
        while not self.stopping:
            try:
                self._step(next_store)
            except Stop:
                break
            if len(self.pending) >= MAX_PENDING or time.monotonic() >= next_store:
                self.store()
                next_store = time.monotonic() + self.interval
        return self.store()

    def _first_contact(self) -> None:
        """The first poll must get a firehose answer: a wrong URL is an error, not a retry loop."""
        try:
            self.pending.extend(self.follower.take(self.wait_for(lambda: self.follower.fetch(1))))
        except Stop:
            return
        except FollowError as err:
            raise FollowError(f"cannot follow the gateway: {err}") from None
        log.info("following %s (category %s), storing to %s every %g s", self.follower.url,
                 self.follower.category, self.writer.path, self.interval)

    def _step(self, next_store: float) -> None:
        wait = self.follower.timeout
        if self.pending:
            wait = max(1, min(wait, math.ceil(next_store - time.monotonic())))
        try:
            reply = self.wait_for(lambda: self.follower.fetch(wait))
            samples = self.follower.take(reply)
        except FollowError as err:
            if not self._lost:
                log.warning("%s; retrying until it answers", err)
            self._lost = True
            self.wait_for(lambda: time.sleep(self._backoff))
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            return
        if self._lost:
            log.info("%s answers again", self.follower.url)
        self._lost, self._backoff = False, BACKOFF_MIN
        self.pending.extend(samples)
        log.debug("poll: %d values, %d waiting, since_time %s", len(samples), len(self.pending), self.follower.since)

    def store(self) -> bool:
        """Write what is pending in one transaction; on failure keep it for the next try."""
        if not self.pending:
            return True
        try:
            new = self.writer.write(self.pending)
            total = self.writer.count()
        except (sqlite3.Error, OSError) as err:
            log.error("could not store %d values in %s: %s; keeping them", len(self.pending), self.writer.path, err)
            self._bound_pending()
            return False
        ignored = f"; {self.follower.ignored} events so far were no meter values" if self.follower.ignored else ""
        log.info("stored %d values (%d in %s)%s", new, total, self.writer.path, ignored)
        self.pending = []
        return True

    def _bound_pending(self) -> None:
        """Memory stays bounded while the disk fails: beyond MAX_KEPT the oldest values are dropped."""
        excess = len(self.pending) - MAX_KEPT
        if excess > 0:
            del self.pending[:excess]
            log.error("dropped the %d oldest unstored values (more than %d waiting)", excess, MAX_KEPT)



def write_tsv(out: TextIO, names: List[str], reader: Reader, devices: Optional[Sequence[int]], start: Optional[int],
              end: Optional[int]) -> int:
    """Header, then one line per device and read time; empty cells where a value was not read."""
    out.write("\t".join(["DeviceId", "Time", *names]) + "\n")
    rows = 0
    for ms, device, values in reader.rows(devices, start, end):
        cells = [repr(values[name]) if name in values else "" for name in names]
        out.write(f"{device}\t{local_time(ms)}\t" + "\t".join(cells) + "\n")
        rows += 1
    return rows
