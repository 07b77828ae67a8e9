"""The energy counters' state at run time: read before the first publish, written when due.

The rules live in sdm/sanity.py (CounterGuard, CounterFile); this room runs
them in the gateway: it builds the guard from the configuration, reads the
state file into it before any bus starts, writes the file when it is due
(the disk work, fsync included, in gevent's thread pool: an SD card may take
tens of ms) and once more at exit.
"""

from __future__ import annotations

import logging
from typing import Optional

import gevent

from .config import Config
from .sanity import STATE_FILE, CounterFile, CounterGuard, CounterPolicy, rating_of
from .state import state_dir

log = logging.getLogger(__name__)

SAVE_CHECK = 1.0   # seconds between two looks at whether the file is due


def counter_guard(config: Config) -> CounterGuard:
    """The one decision about energy counters, with the configured numbers and meter ratings."""
    numbers = config.counters
    policy = CounterPolicy(confirm_readings=numbers.confirm_readings, confirm_seconds=numbers.confirm_seconds,
                           first_readings=numbers.first_readings)
    ratings = {m.name: rating_of(m.model, m.max_current) for m in config.meters if m.max_current is not None}
    return CounterGuard(policy, ratings)


class CounterKeeper:
    """A guard and its state file for one gateway (StateError when there is no state directory)."""

    def __init__(self, config: Config):
        self.guard = counter_guard(config)
        self.store = CounterFile(state_dir(config.state_dir) / STATE_FILE)
        for warning in self.store.load(self.guard, {m.name: m.model for m in config.meters}):
            log.warning("%s", warning)
        log.info("energy counters: state in %s", self.store.path)
        self._saver: Optional[gevent.Greenlet] = None

    def start(self) -> None:
        self._saver = gevent.spawn(self._keep_saving)

    def stop(self) -> None:
        """Stop the periodic writes and write the file once more (idempotent)."""
        if self._saver is None:
            return
        self._saver.kill()
        self._saver = None
        try:
            self.store.save(self.guard)
        except OSError as err:
            log.error("%s: cannot be written at exit (%s); the next start uses the last good copy",
                      self.store.path, err.strerror or err)

    def _keep_saving(self) -> None:
        pool = gevent.get_hub().threadpool
        while True:
            gevent.sleep(SAVE_CHECK)
            problem = self.store.maybe_save(self.guard, lambda work: pool.apply(work))
            if problem:
                log.warning("%s", problem)
