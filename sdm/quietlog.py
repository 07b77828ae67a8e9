"""Log lines a client can provoke, at most one per kind and interval.

A LAN client can send bad requests or break the websocket protocol as fast as
it likes; logging each would fill the disk and drown the lines that matter
(the buses'). :class:`RepeatLog` writes the first event of a kind, counts the
rest of that interval, and writes the count with the first event of the next
one. Kinds are a few fixed words chosen by the caller (never a client's
address or input), so its memory stays bounded whoever connects.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List

INTERVAL = 60.0   # s: at most one line per kind of event this often


class RepeatLog:
    """One line per kind of event and interval; the events left out are counted into the next line."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._kinds: Dict[str, List[float]] = {}    # kind -> [end of its interval, events left out]

    def log(self, level: int, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``kind`` was logged less than an interval ago; True if written."""
        now = self.clock()
        state = self._kinds.get(kind)
        if state is not None and now < state[0]:
            state[1] += 1
            return False
        left_out = int(state[1]) if state else 0
        if left_out:
            message += f" ({left_out} more {kind} since the last such line)"
        self.logger.log(level, message, *args)
        self._kinds[kind] = [now + self.interval, 0]
        return True
