"""Following a gateway's /firehose by long polling, losing nothing between polls.

Each request carries ``since_time`` = the newest event ``timestamp`` seen so
far, so events published while no request was waiting come with the next
one (as long as the gateway's buffer still holds them); the original logger
polled without it and lost them.  Replies are checked, never trusted: a
timeout body is an empty poll, anything malformed is a :class:`BadReply`,
a gateway that cannot be reached is :class:`Unreachable`.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import socket
from datetime import datetime, timedelta, timezone
from typing import Any, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from .store import MAX_DEVICE, Sample

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def local_time(ms: int) -> str:
    """ISO 8601 in local time with its offset, to the millisecond."""
    return (EPOCH + timedelta(milliseconds=ms)).astimezone().isoformat(timespec="milliseconds")


ONE_MS = timedelta(milliseconds=1)
GRACE = 10.0     # seconds an answer may take beyond the long-poll timeout
# RFC 3339 as Go writes it: up to 9 digits of fraction, Z or an offset
RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)\Z")


class FollowError(Exception):
    pass


class Unreachable(FollowError):
    """No HTTP answer: refused, reset, timed out, unknown host."""


class BadReply(FollowError):
    """An HTTP answer that is not a firehose reply (or is its error body)."""


def parse_base_url(url: str) -> Tuple[str, int, str]:
    """``host:port``, ``http://host:port/prefix`` -> (host, port, path prefix); ValueError otherwise."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        raise ValueError(f"gateway URL {url!r}: only http:// is supported")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"gateway URL {url!r} has a bad port") from None
    if not parts.hostname:
        raise ValueError(f"gateway URL {url!r} names no host (use e.g. localhost:8080)")
    return parts.hostname, port, parts.path.rstrip("/")


def read_time_ms(text: Any) -> Optional[int]:
    """An RFC 3339 ReadTimestamp (or ms as a number) -> ms since the epoch; None if unusable."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and math.isfinite(text):
        return int(text) if text > 0 else None
    match = RFC3339.match(text) if isinstance(text, str) else None
    if not match:
        return None
    whole, fraction, zone = match.groups()
    moment = datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}{'+00:00' if zone == 'Z' else zone}")
    if moment <= EPOCH:
        return None   # Go's zero time: no read time
    return (moment - EPOCH) // ONE_MS


def to_sample(event: Any) -> Optional[Sample]:
    """A meterupdate event -> Sample; None for any other or malformed event."""
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict):
        return None
    device, name, value = data.get("DeviceId"), data.get("IEC61850"), data.get("Value")
    if not (isinstance(device, int) and 0 <= device <= MAX_DEVICE and isinstance(name, str) and name):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    when = read_time_ms(data.get("ReadTimestamp")) or read_time_ms(event.get("timestamp"))
    return None if when is None else Sample(device, name, when, float(value))


class Follower:
    """Long-polls one gateway's firehose; keeps the ``since_time`` cursor."""

    def __init__(self, url: str, category: str, timeout: int, since: Optional[int] = None):
        self.host, self.port, prefix = parse_base_url(url)
        self.path = f"{prefix}/firehose"
        self.category = category
        self.timeout = timeout
        self.since = since
        self.ignored = 0           # events that were not usable meter values

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def take(self, reply: Tuple[int, bytes]) -> List[Sample]:
        """The samples of one reply; moves the cursor past its events."""
        samples = []
        for event in self.events(reply):
            sample = to_sample(event)
            if sample is None:
                self.ignored += 1
            else:
                samples.append(sample)
        return samples

    def events(self, reply: Tuple[int, bytes]) -> List[Any]:
        """The events of one reply, as they came (none for a timeout); moves the cursor past them."""
        events = self._events(reply)
        for event in events:
            stamp = event.get("timestamp") if isinstance(event, dict) else None
            if isinstance(stamp, int) and not isinstance(stamp, bool):
                self.since = max(self.since or stamp, stamp)
        return events

    def fetch(self, wait: int) -> Tuple[int, bytes]:
        """(HTTP status, body) of one request on a fresh connection (a long poll outlives any keep-alive)."""
        query = {"timeout": wait, "category": self.category}
        if self.since is not None:
            query["since_time"] = self.since
        conn = http.client.HTTPConnection(self.host, self.port, timeout=wait + GRACE)
        try:
            conn.request("GET", f"{self.path}?{urlencode(query)}")
            reply = conn.getresponse()
            return reply.status, reply.read()
        except socket.timeout:
            raise Unreachable(f"{self.url}: no answer within {wait + GRACE:g} s") from None
        except (OSError, http.client.HTTPException) as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise Unreachable(f"{self.url}: {reason}") from None
        finally:
            conn.close()

    def _events(self, reply: Tuple[int, bytes]) -> List[Any]:
        status, body = reply
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            raise BadReply(f"{self.url}: the gateway says: {parsed['error']}")
        if status != 200:
            raise BadReply(f"{self.url}: HTTP {status}")
        if not isinstance(parsed, dict):
            raise BadReply(f"{self.url}: the answer is not a JSON object")
        if isinstance(parsed.get("events"), list):
            return parsed["events"]
        if "timeout" in parsed:
            return []
        raise BadReply(f"{self.url}: the answer has neither events nor a timeout")
