"""Answers computed once per change of the hub, not once per request.

/minuteavg and /metrics walk every meter's values (and /minuteavg a minute of
samples each); twenty clients asking in a loop would otherwise spend the
loop's time recomputing the same bytes. The hub counts its changes
(``Hub.changes``: a publish, a status, a request counted, a bus state), and an
:class:`OncePerChange` keeps its body while the count stands still.
Staleness is bounded both ways: after a change the body is made again, but not
more often than every ``min_interval`` s (a bus answering 50 times a second
does not cost 50 recomputations), and never kept longer than ``max_age`` s
(a minute's average also moves as old samples leave the window).
"""

from __future__ import annotations

import time
from typing import Callable, Generic, Optional, TypeVar

from .hub import Hub

T = TypeVar("T")

MIN_INTERVAL = 0.5    # s: the least time between two computations of one answer
MAX_AGE = 5.0         # s: the longest an answer is kept, change or not


class OncePerChange(Generic[T]):
    """The result of ``compute()``, made again only after the hub changed (see the module doc)."""

    def __init__(self, compute: Callable[[], T], hub: Hub, min_interval: float = MIN_INTERVAL,
                 max_age: float = MAX_AGE, clock: Callable[[], float] = time.monotonic):
        self.compute = compute
        self.hub = hub
        self.min_interval = min_interval
        self.max_age = max_age
        self.clock = clock
        self._value: Optional[T] = None
        self._made = 0.0
        self._changes = -1

    def get(self) -> T:
        now = self.clock()
        age = now - self._made
        stale = self.hub.changes != self._changes and age >= self.min_interval
        if self._value is None or stale or age >= self.max_age:
            self._changes = self.hub.changes
            self._value = self.compute()
            self._made = now
        return self._value
