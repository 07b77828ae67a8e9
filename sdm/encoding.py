"""Registers <-> numbers.  Pure functions, shared by the gateway and the simulator.

Every encoding in the meter tables is 32 bits in two 16-bit registers, high
word first ("ABCD", docs/registers.md).  A float32 is returned as the
shortest decimal that maps back to the same float32 (230.1, not the widened
230.10000610351562), so JSON shows what the meter shows; a value with a divisor
is that decimal divided exactly (a Janitza 1215491.1 Wh is 1215.4911 kWh, not the
1215.4911000000002 of float division), so every output shows what the meter meant.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Optional, Sequence, Tuple

FLOAT32 = "float32"
UINT32 = "uint32"


@dataclass(frozen=True)
class Encoding:
    """How a value sits in two registers: ``kind`` and a divisor applied on decode."""

    kind: str = FLOAT32
    divisor: float = 1.0

    width: int = 2  # registers; every encoding of the seed meters is 32 bits


    @property
    def wraps_at(self) -> Optional[float]:
        """The physical value at which a counter in this encoding rolls over to 0.

        An unsigned count with a divisor wraps at 2**32 / divisor (4,294,967.296 kWh for a
        DZG energy register).  A float32 never wraps: a growing counter loses resolution instead
        (at 1e6 kWh one step is 0.0625 kWh, at 1e7 kWh 1 kWh), so None.
        """
        if self.kind == UINT32:
            return 2.0 ** 32 / self.divisor
        return None

    def resolution(self, value: float) -> float:
        """The smallest step this encoding can show near ``value`` (physical units)."""
        if self.kind == UINT32:
            return 1.0 / self.divisor
        scaled = abs(value * self.divisor)
        if not math.isfinite(scaled) or scaled < FLOAT32_TINY:
            return FLOAT32_TINY / self.divisor
        return 2.0 ** (math.frexp(scaled)[1] - 24) / self.divisor


F32 = Encoding(FLOAT32)
FLOAT32_TINY = 2.0 ** -126   # the smallest normal float32
FLOAT32_MAX = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


def uint32(divisor: float) -> Encoding:
    return Encoding(UINT32, divisor)


def float32_div(divisor: float) -> Encoding:
    return Encoding(FLOAT32, divisor)


def shortest_float32(value: float) -> float:
    """The float with the shortest repr that rounds to the same float32 as ``value``."""
    if not math.isfinite(value) or value == 0.0:
        return value
    target = struct.pack(">f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == target:
            return candidate
    return value


def exact_quotient(value: float, divisor: float) -> float:
    """``value / divisor`` computed on the decimals the two floats print as.

    Float division of 1215491.1 by 1000 gives 1215.4911000000002: 1215491.1 is stored a
    little off, and the division keeps the error. Dividing the decimals (exact for powers of
    ten) and converting once gives the float that prints as 1215.4911.
    """
    if divisor == 1.0 or not math.isfinite(value):
        return value / divisor
    return float(Decimal(repr(value)) / Decimal(repr(divisor)))


def decode(registers: Sequence[int], encoding: Encoding) -> float:
    """Two registers (high word first) -> the physical value."""
    raw = struct.pack(">HH", registers[0], registers[1])
    if encoding.kind == FLOAT32:
        return exact_quotient(shortest_float32(struct.unpack(">f", raw)[0]), encoding.divisor)
    if encoding.kind == UINT32:
        return exact_quotient(float(struct.unpack(">I", raw)[0]), encoding.divisor)
    raise ValueError(f"unknown encoding {encoding.kind!r}")


def encode(value: float, encoding: Encoding) -> Tuple[int, int]:
    """The physical value -> two registers, the way a meter stores it.

    uint32 values are rounded to the register's resolution and clamped to its
    range (a meter cannot hold a negative or oversized count).
    """
    scaled = value * encoding.divisor
    if encoding.kind == FLOAT32:
        if math.isfinite(scaled) and abs(scaled) > FLOAT32_MAX:
            scaled = math.copysign(math.inf, scaled)
        raw = struct.pack(">f", scaled)
    elif encoding.kind == UINT32:
        if math.isnan(scaled):
            scaled = 0
        raw = struct.pack(">I", int(min(max(round(scaled), 0), 0xFFFFFFFF)))
    else:
        raise ValueError(f"unknown encoding {encoding.kind!r}")
    high, low = struct.unpack(">HH", raw)
    return high, low
