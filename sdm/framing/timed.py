"""A line that notes when a request left and when the first byte of its answer came.

The learned timing of a meter (sdm.timing) rests on one figure per exchange: the
meter's turnaround.  Framing reads the first byte of every reply on its own
(see rtu.read_head), so the time that first non-empty read returns is when the
answer began to arrive.  Wrapping the line keeps this out of the framing's checks.
"""

from __future__ import annotations

import time
from typing import Optional

from ..transport import Line


class TimedLine:
    """``line`` with the monotonic times of the last write and of the first byte read after it.

    ``paced``: bytes arrive at the line rate (a serial line, a transparent gateway), so a read
    of several bytes is dated back to its first; a Modbus TCP gateway hands over a reply at once.
    """

    def __init__(self, line: Line, paced: bool = True):
        self.line = line
        self.paced = paced
        self.written_at: Optional[float] = None
        self.first_byte_at: Optional[float] = None

    @property
    def char_time(self) -> float:
        return self.line.char_time

    def clear_input(self) -> None:
        self.line.clear_input()

    def write(self, data: bytes) -> None:
        self.first_byte_at = None
        self.line.write(data)
        self.written_at = time.monotonic()

    def read(self, size: int, deadline: float) -> bytes:
        data = self.line.read(size, deadline)
        if data and self.first_byte_at is None:
            # a read of several bytes returns when the last of them is in: count back to the first
            self.first_byte_at = time.monotonic() - (len(data) - 1) * self.line.char_time * self.paced
        return data

    def settle(self, quiet: float, limit: float) -> None:
        self.line.settle(quiet, limit)

    def since_write(self, request_time: float) -> Optional[float]:
        """Seconds from the end of the request (``request_time`` after the write returned:
        its own transmission) to the first reply byte; None when no byte came."""
        if self.written_at is None or self.first_byte_at is None:
            return None
        return max(0.0, self.first_byte_at - self.written_at - request_time)
