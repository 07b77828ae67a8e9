"""The block planner: a meter's registers -> the cheapest legal list of requests.

A request costs its fixed overhead (request frame, reply header and CRC, the
silences around both on RTU, a TCP round trip, the meter's pause) plus two
bytes per register it asks for.  Bridging a gap is worth it when the gap's bytes cost less than a second
request.  For each function code the registers are sorted and cut into runs
by dynamic programming, so the plan is the cheapest possible one that never
splits a value and never asks for more than the model allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Dict, List, Optional, Sequence, Tuple

from .encoding import decode
from .framing.rtu import REPLY_OVERHEAD, REQUEST_BYTES, reply_bytes
from .meters.model import Register
from .readings import finite_or_none
from .transport import LineCost, silence_time


@dataclass(frozen=True)
class Block:
    """One read request: registers [start, start + count) with function code fc."""

    fc: int
    start: int
    count: int
    registers: Tuple[Register, ...]

    def offset(self, reg: Register) -> int:
        return reg.address - self.start


def decode_block(block: Block, registers: Sequence[int]) -> Dict[str, Optional[float]]:
    """Values of every measurement in a block's reply registers; NaN and infinities become None.

    Shared by the poller and the simulator's served log, so both read a reply the same way.
    """
    values = {}
    for reg in block.registers:
        offset = block.offset(reg)
        values[reg.name] = finite_or_none(decode(registers[offset:offset + reg.width], reg.encoding))
    return values


UNIT_COST = LineCost(char_time=1.0)   # costs in plain character counts


def request_overhead_chars(cost: LineCost = UNIT_COST, pause: float = 0.0, turnaround: float = 0.0) -> float:
    """Character times one request costs besides its registers, on a link of this ``cost``,
    for a meter that needs ``pause`` seconds of quiet before its next request and takes
    ``turnaround`` seconds to start its answer."""
    return (REQUEST_BYTES + REPLY_OVERHEAD + 2 * cost.silence_chars
            + (pause + turnaround + cost.round_trip) / cost.char_time)


def make_block(regs: Sequence[Register]) -> Block:
    start = regs[0].address
    return Block(regs[0].fc, start, regs[-1].end - start, tuple(regs))


def _plan_one_fc(regs: Sequence[Register], max_registers: int, overhead: float) -> List[Block]:
    """Cheapest cut of address-sorted registers of one function code into blocks."""
    n = len(regs)
    best = [0.0] + [float("inf")] * n   # best[i]: cost of reading regs[:i]
    cut = [0] * (n + 1)                 # cut[i]: where the last block of best[i] starts
    for end in range(1, n + 1):
        for begin in range(end - 1, -1, -1):
            span = regs[end - 1].end - regs[begin].address
            if span > max_registers:
                break
            cost = best[begin] + overhead + 2 * span
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    blocks: List[Block] = []
    end = n
    while end > 0:
        begin = cut[end]
        blocks.append(make_block(regs[begin:end]))
        end = begin
    return blocks[::-1]


def plan(regs: Sequence[Register], max_registers: int, overhead_chars: float = request_overhead_chars()) -> List[Block]:
    """Blocks covering every register, in (function code, address) order."""
    for reg in regs:
        if reg.width > max_registers:
            raise ValueError(f"{reg.name} is wider than {max_registers} registers")
    ordered = sorted(regs, key=lambda r: (r.fc, r.address))
    blocks: List[Block] = []
    for _, group in groupby(ordered, key=lambda r: r.fc):
        blocks.extend(_plan_one_fc(list(group), max_registers, overhead_chars))
    return blocks


def split(block: Block) -> List[Block]:
    """One block per register: the fallback when a meter refuses a whole block."""
    return [make_block([reg]) for reg in block.registers]


def one_per_request(regs: Sequence[Register]) -> List[Block]:
    """One request per value, in (function code, address) order: gosdm630's way, for comparison."""
    return [make_block([reg]) for reg in sorted(regs, key=lambda r: (r.fc, r.address))]


def exchange_chars(block: Block) -> int:
    """Characters a request for ``block`` and its reply put on the wire."""
    return REQUEST_BYTES + reply_bytes(block.count)


def wire_time(blocks: Sequence[Block], char_time: float) -> float:
    """The least time the wire needs for these requests and their replies, in seconds.

    Every character at the line rate plus the MODBUS silence before each frame
    (request and reply): no meter turnaround, no pause between requests.
    """
    chars = sum(exchange_chars(block) for block in blocks)
    return chars * char_time + 2 * len(blocks) * silence_time(char_time)
