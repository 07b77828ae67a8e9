"""GET /firehose: long polling (RFC 6202) in gosdm630's envelope (docs/api.md, GET /firehose).

Every hub event is stored, already serialized, in a bounded buffer of its
category and wakes the waiting requests.  Each publish gets its own
millisecond stamp (one later than the previous one if the clock has not
moved on), so ``since_time`` = the newest ``timestamp`` a client has seen is
an exact cursor: a reconnecting client gets every buffered event after it,
none twice.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import deque
from operator import itemgetter
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

import bottle
from gevent.event import Event

from ..hub import Hub, MeterUpdate, StatusUpdate
from ..readings import compact
from .events import firehose_record, measured
from .slots import PerAddress

METER = "meterupdate"
STATUS = "statusupdate"
CATEGORIES: Dict[str, Tuple[str, ...]] = {
    METER: (METER,),
    "meterupdates": (METER,),      # the seed README's spelling
    STATUS: (STATUS,),
    "all": (METER, STATUS),
}
# Enough for a minute of every value at 19200 baud (the fastest comset: at
# most ~480 float values a second on the wire), whichever meters share the bus.
BUFFER_SIZES = {METER: 30_000, STATUS: 300}
MAX_TIMEOUT = 120

# golongpoll's exact bodies, including its spacing.
BAD_TIMEOUT = b'{"error": "Invalid timeout arg.  Must be 1-120."}'
BAD_CATEGORY = b'{"error": "Invalid subscription category, must be 1-1024 characters long."}'
BAD_SINCE = b'{"error": "Invalid last_event_time arg."}'
INTEGER = re.compile(r"[+-]?[0-9]+\Z")
INT64_MAX = 2 ** 63 - 1
MAX_CACHED_REPLIES = 32   # distinct cursors kept between two publishes (each reply up to ~0.4 MB)
MAX_REPLY_EVENTS = 2000   # one reply's events (~0.4 MB): a client far behind catches up in several polls

Stamped = Tuple[int, bytes]


def _publish_boundary(stamped: List[Stamped], limit: int) -> int:
    """How many events to send: at most ``limit``, never part of a publish (events sharing a
    stamp), but always the whole first publish even when it is larger."""
    if len(stamped) <= limit:
        return len(stamped)
    cut = limit
    while cut > 0 and stamped[cut][0] == stamped[cut - 1][0]:
        cut -= 1
    if cut == 0:
        first = stamped[0][0]
        while cut < len(stamped) and stamped[cut][0] == first:
            cut += 1
    return cut


class EventBuffer:
    """Serialized events per category, bounded, with a wake-up for waiters."""

    def __init__(self, sizes: Dict[str, int] = BUFFER_SIZES):
        self._buffers: Dict[str, Deque[Stamped]] = {cat: deque(maxlen=n) for cat, n in sizes.items()}
        self.last = 0                  # stamp of the newest publish, ms
        self._arrived = Event()

    def _stamp(self) -> int:
        self.last = max(int(time.time() * 1000), self.last + 1)
        return self.last

    def add(self, category: str, payloads: Iterable[Any]) -> None:
        """Store one publish (all its payloads share a stamp) and wake the waiters."""
        stamp = self._stamp()
        head = b'{"timestamp":%d,"category":"%s","data":' % (stamp, category.encode())
        self._buffers[category].extend((stamp, head + compact(p) + b"}") for p in payloads)
        self.wake()

    def newer(self, categories: Iterable[str], cursor: int, limit: int = MAX_REPLY_EVENTS) -> List[bytes]:
        """Events of ``categories`` stamped after ``cursor``, oldest first; about ``limit`` at most,
        cut between two publishes, so a client resuming from the newest stamp it got loses nothing."""
        found = []
        for category in categories:
            recent: List[Stamped] = []
            for stamped in reversed(self._buffers[category]):
                if stamped[0] <= cursor:
                    break
                recent.append(stamped)
            recent.reverse()
            found.append(recent)
        merged = list(heapq.merge(*found, key=itemgetter(0)))
        return [event for _, event in merged[:_publish_boundary(merged, limit)]]

    def wait(self, timeout: float) -> None:
        """Sleep until the next publish, a wake() or ``timeout`` s."""
        self._arrived.wait(timeout)

    def wake(self) -> None:
        arrived, self._arrived = self._arrived, Event()
        arrived.set()


def parse_integer(text: str, low: int, high: int) -> Optional[int]:
    """Go's strconv integer syntax within [low, high]; None otherwise."""
    if not INTEGER.match(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


class Firehose:
    """The /firehose route and the hub subscriber that fills its buffer.

    At most ``max_waiting`` requests wait at a time, ``per_address`` of them from one client
    address; one more gets a 503 at once.
    """

    def __init__(self, hub: Hub, buffer: Optional[EventBuffer] = None, max_waiting: int = 200,
                 per_address: int = 10):
        self.buffer = buffer or EventBuffer()
        self.max_waiting = max_waiting
        self.addresses = PerAddress(per_address)
        self._replies: Dict[Tuple[Tuple[str, ...], int], bytes] = {}   # replies made since the last publish
        self._replies_at = -1                 # the buffer's newest stamp they were made at
        self.waiting = 0
        self.closed = False
        hub.subscribe(self.on_event)

    def close(self) -> None:
        """Answer every waiting request now (as a timeout) and every later one at once."""
        self.closed = True
        self.buffer.wake()

    def on_event(self, event: object) -> None:
        if isinstance(event, MeterUpdate):
            self.buffer.add(METER, [firehose_record(event.name, event.device_id, name, value, event.timestamp)
                                    for name, value in measured(event.values)])
        elif isinstance(event, StatusUpdate):
            self.buffer.add(STATUS, [event.status])

    def mount(self, app: bottle.Bottle) -> None:
        app.route("/firehose", "GET", self.handle)

    def handle(self) -> bytes:
        query = bottle.request.query
        response = bottle.response
        response.content_type = "application/json"
        response.set_header("Cache-Control", "no-cache, no-store, must-revalidate")
        response.set_header("Pragma", "no-cache")
        response.set_header("Expires", "0")
        timeout = parse_integer(query.get("timeout", ""), 1, MAX_TIMEOUT)
        if timeout is None:
            return self._bad(BAD_TIMEOUT)
        category = query.get("category", "")
        if not 1 <= len(category) <= 1024:
            return self._bad(BAD_CATEGORY)
        since_text = query.get("since_time", "")
        cursor = self.buffer.last
        if since_text:
            since = parse_integer(since_text, -INT64_MAX - 1, INT64_MAX)
            if since is None:
                return self._bad(BAD_SINCE)
            cursor = since
        if category not in CATEGORIES:
            return self._bad(compact({"error": f"Unknown category {category!r}; use one of "
                                                f"{', '.join(CATEGORIES)}."}))
        if self.waiting >= self.max_waiting:
            return self._busy(f"too many long-poll clients (at most {self.max_waiting}); try again later")
        address = bottle.request.environ.get("REMOTE_ADDR", "?")   # never X-Forwarded-For: a client writes that
        if not self.addresses.take(address):
            return self._busy(f"too many long polls from your address (at most {self.addresses.limit}); "
                              "try again later")
        self.waiting += 1
        try:
            return self._poll(CATEGORIES[category], cursor, timeout)
        finally:
            self.waiting -= 1
            self.addresses.give_back(address)

    def _reply(self, categories: Tuple[str, ...], cursor: int) -> bytes:
        """The events after ``cursor`` as a reply body (b"" for none), made once per publish:
        clients asking from the same cursor (since_time=0 is 0.4 MB) share the bytes."""
        if self._replies_at != self.buffer.last or len(self._replies) >= MAX_CACHED_REPLIES:
            self._replies.clear()
            self._replies_at = self.buffer.last
        key = (categories, cursor)
        if key not in self._replies:
            events = self.buffer.newer(categories, cursor)
            self._replies[key] = b'{"events":[' + b",".join(events) + b"]}" if events else b""
        return self._replies[key]

    @staticmethod
    def _busy(message: str) -> bytes:
        bottle.response.status = 503
        bottle.response.set_header("Retry-After", "1")
        return compact({"error": message})

    def _poll(self, categories: Tuple[str, ...], cursor: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            reply = self._reply(categories, cursor)
            if reply:
                return reply
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return b'{"timeout":"no events before timeout","timestamp":%d}' % int(time.time() * 1000)
            self.buffer.wait(remaining)

    @staticmethod
    def _bad(body: bytes) -> bytes:
        bottle.response.status = 400
        return body
