"""The line under a bus: what every transport shares, and the interfaces the rooms above use.

A bus talks to its meters through a :class:`Link`: a transport (a serial
adapter, a TCP socket) together with its framing (RTU, or MBAP for Modbus
TCP).  RTU framing itself needs only a :class:`Line`, so a serial port and a
transparent RTU-over-TCP socket carry the same frames with the same checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol

from serial import PARITY_EVEN, PARITY_NONE


class TransportError(Exception):
    """The adapter cannot be used: missing, unplugged, or failing I/O."""


@dataclass(frozen=True)
class Comset:
    baud: int
    parity: str  # "N" (PARITY_NONE) or "E" (PARITY_EVEN)

    @property
    def bits_per_char(self) -> int:
        return 10 if self.parity == PARITY_NONE else 11

    @property
    def char_time(self) -> float:
        return self.bits_per_char / self.baud

    def __str__(self) -> str:
        return f"{self.baud} 8{self.parity}1"


# gosdm630's -c/--comset table (docs/registers.md, conventions)
COMSETS: Dict[int, Comset] = {
    1: Comset(2400, PARITY_NONE),
    2: Comset(9600, PARITY_NONE),
    3: Comset(19200, PARITY_NONE),
    4: Comset(2400, PARITY_EVEN),
    5: Comset(9600, PARITY_EVEN),
    6: Comset(19200, PARITY_EVEN),
}


def comset(number: int) -> Comset:
    try:
        return COMSETS[number]
    except KeyError:
        raise ValueError(f"comset must be 1-6, not {number}") from None


def comset_number(settings: Comset) -> Optional[int]:
    """The -c number of a line setting; None for one outside the table."""
    return next((number for number, known in COMSETS.items() if known == settings), None)


def comset_label(settings: Comset) -> str:
    """``9600 8N1 (-c 2)``: a line setting as a user reads it, with the flag that selects it."""
    number = comset_number(settings)
    return f"{settings} (-c {number})" if number is not None else str(settings)


def parse_comsets(text: str) -> List[int]:
    """``all`` or ``1,2,5``: the -c numbers to try, in the order given; ValueError names the choices."""
    if text.strip().lower() == "all":
        return sorted(COMSETS)
    numbers: List[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not (part.isascii() and part.isdigit()) or int(part) not in COMSETS:
            raise ValueError(f"invalid choice: {part!r} (choose 1-6, a list like 1,2,5, or all)")
        if int(part) not in numbers:
            numbers.append(int(part))
    if not numbers:
        raise ValueError("no comset given (choose 1-6, a list like 1,2,5, or all)")
    return numbers


def silence_time(char_time: float) -> float:
    """MODBUS inter-frame silence: 3.5 characters, at least 1.75 ms above 19200 baud."""
    return max(3.5 * char_time, 0.00175)


def drain(line: Line, quiet: float, limit: float) -> None:
    """Discard input until ``line`` has been quiet for ``quiet`` s (at most ``limit`` s).

    What every transport's ``settle`` does: after a failed exchange, stray
    bytes of it must not be taken for the next reply.
    """
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not line.read(4096, min(time.monotonic() + quiet, end)):
            return


@dataclass(frozen=True)
class LineCost:
    """What a request costs on a link beyond its bytes, for the planner.

    ``char_time``: seconds per character of the RTU line the bytes cross
    (for Modbus TCP, the serial line behind the gateway);
    ``silence_chars``: characters of silence before each frame (3.5 on RTU,
    0 where MBAP frames the bytes); ``round_trip``: seconds a TCP request adds.
    """

    char_time: float
    silence_chars: float = 3.5
    round_trip: float = 0.0


class Line(Protocol):
    """A byte pipe that RTU frames travel on (serial port, transparent TCP gateway)."""

    @property
    def char_time(self) -> float: ...

    def clear_input(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def read(self, size: int, deadline: float) -> bytes: ...
    def settle(self, quiet: float, limit: float) -> None: ...


class Transport(Line, Protocol):
    """A line that can be opened and closed, named by its configured port."""

    port: str            # as configured: /dev/ttyUSB0, rtu+tcp://host:port, tcp://host:port
    kind: str            # "serial", "rtu+tcp" or "tcp"

    @property
    def is_open(self) -> bool: ...
    def open(self) -> None: ...
    def close(self) -> None: ...


class OnTransport:
    """A link's opening and closing: its transport's (the framings' Links share this)."""

    transport: Transport

    @property
    def is_open(self) -> bool:
        return self.transport.is_open

    def open(self) -> None:
        self.transport.open()

    def close(self) -> None:
        self.transport.close()


class Link(Protocol):
    """What a bus poller needs: open/close, and one checked exchange of a register read.

    ``exchange`` returns the registers or raises a ``sdm.framing.rtu.ModbusError``
    (the meter's fault: counted per meter) or :class:`TransportError` (the
    link's fault: the bus closes and reopens it).  ``prompt``: a reply that has
    not begun within ``timeout`` counts as none (a bus scan's short wait).
    ``hint``: what the link suspects is wrong with its gateway, or None.
    """

    port: str            # as configured: /dev/ttyUSB0, rtu+tcp://host:port, tcp://host:port
    kind: str            # "serial", "rtu+tcp" or "tcp"
    cost: LineCost
    hint: Optional[str]

    @property
    def turnaround(self) -> Optional[float]:
        """Seconds from the end of the last exchange's request to the first byte of its reply,
        None when no byte came (the meter's turnaround, for sdm.timing)."""

    @property
    def transport(self) -> Line: ...
    @property
    def is_open(self) -> bool: ...
    def open(self) -> None: ...
    def close(self) -> None: ...
    def exchange(self, slave: int, fc: int, start: int, count: int, timeout: float,
                 prompt: bool = False) -> List[int]: ...
