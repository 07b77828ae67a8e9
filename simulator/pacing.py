"""Wire time on a pty: the simulator's replies take as long as they would on RS485.

A pty moves bytes at once whatever the baud rate, so the simulator keeps a
model of the line instead.  A request occupies the wire for its own length
at the line rate from the moment it is read; the reply may start after that,
plus the MODBUS silence and the meter's turnaround, and each of its bytes is
handed over only once it would have been fully transmitted.  Writes go out a
few bytes per wake-up against fixed deadlines computed from the reply's
start, so a late wake-up delays one chunk but never the ones after it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from sdm.transport import Comset, silence_time

WAKE_INTERVAL = 0.004   # seconds of wire time per write: a few bytes per wake-up at 9600


@dataclass
class Pacing:
    """The line model: when the wire is free, and when each byte of a reply is due."""

    char_time: float                 # seconds per character (bits per char / baud)
    turnaround: float = 0.0          # the meter's own delay before it answers
    busy_until: float = 0.0          # when the last byte seen on the wire has fully arrived

    @property
    def bytes_per_wake(self) -> int:
        return max(1, int(WAKE_INTERVAL / self.char_time))

    def received(self, size: int, now: float) -> None:
        """``size`` request bytes were read at ``now``: they occupy the wire from then on."""
        self.busy_until = max(self.busy_until, now) + size * self.char_time

    def reply_start(self, now: float) -> float:
        """The earliest time a reply may start: after the request, the silence and the turnaround."""
        return max(now, self.busy_until + silence_time(self.char_time) + self.turnaround)

    def schedule(self, size: int, now: float) -> List[Tuple[float, int]]:
        """(deadline, end) pairs: bytes [previous end, end) may be written at deadline.

        A byte counts as sent when its last bit would have left the wire, so
        the chunk ending at byte ``end`` is due at start + end * char_time.
        """
        start = self.reply_start(now)
        step = self.bytes_per_wake
        ends = list(range(step, size, step)) + [size]
        plan = [(start + end * self.char_time, end) for end in ends]
        self.busy_until = plan[-1][0]
        return plan


class PacedLine:
    """A line (a PtyLine) whose replies cost real wire time."""

    def __init__(self, line, pacing: Pacing, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.line = line
        self.pacing = pacing
        self.clock = clock
        self.sleep = sleep

    def read(self, timeout):
        data = self.line.read(timeout)
        if data:
            self.pacing.received(len(data), self.clock())
        return data

    def write(self, data: bytes) -> None:
        if not data:
            return
        begin = 0
        for deadline, end in self.pacing.schedule(len(data), self.clock()):
            wait = deadline - self.clock()
            if wait > 0:
                self.sleep(wait)
            self.line.write(data[begin:end])
            begin = end

    def __getattr__(self, name):
        """Everything else (slave_path, close, ...) is the wrapped line's."""
        return getattr(self.line, name)


def pacing_for(baud: Optional[int], parity: str = "N", turnaround: float = 0.0) -> Optional[Pacing]:
    """The line model for --baud, --parity and --turnaround-ms; None to answer at once."""
    if baud is None:
        if turnaround:
            raise ValueError("--turnaround-ms needs --baud")
        return None
    if baud <= 0 or turnaround < 0:
        raise ValueError("--baud must be positive and --turnaround-ms not negative")
    return Pacing(Comset(baud, parity).char_time, turnaround)


def paced(line, pacing: Optional[Pacing]):
    """``line`` itself, or wrapped so that its replies cost wire time."""
    return line if pacing is None else PacedLine(line, pacing)
