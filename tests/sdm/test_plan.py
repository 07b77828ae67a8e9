"""The block planner: never splits a value, never exceeds a limit, covers every register."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdm.meters import MODELS
from sdm.meters.model import Register
from sdm.plan import make_block, one_per_request, plan, request_overhead_chars, split, wire_time
from sdm.transport import COMSETS, LineCost


@st.composite
def register_sets(draw):
    """Non-overlapping 2-register values at random addresses, on FC 03 and/or 04."""
    regs = []
    for fc in draw(st.sets(st.sampled_from([3, 4]), min_size=1)):
        starts = draw(st.lists(st.integers(0, 2000), min_size=1, max_size=40, unique=True))
        taken = set()
        for start in sorted(starts):
            if start in taken or start + 1 in taken:
                continue
            taken.update((start, start + 1))
            regs.append(Register(f"R{fc}_{start}", fc, start))
    return regs


def check(blocks, regs, limit):
    covered = []
    for block in blocks:
        assert block.count <= limit
        for reg in block.registers:
            assert reg.fc == block.fc
            assert block.start <= reg.address and reg.end <= block.start + block.count   # never split
        assert block.registers[0].address == block.start
        assert block.registers[-1].end == block.start + block.count
        covered.extend(block.registers)
    assert sorted(covered, key=id) == sorted(regs, key=id)   # each register exactly once


@given(register_sets(), st.integers(2, 125), st.floats(0, 200))
def test_plan_is_legal_and_complete(regs, limit, overhead):
    check(plan(regs, limit, overhead), regs, limit)


@given(register_sets(), st.integers(2, 125))
def test_plan_is_no_dearer_than_one_request_per_value(regs, limit):
    overhead = request_overhead_chars()
    blocks = plan(regs, limit, overhead)
    cost = sum(overhead + 2 * b.count for b in blocks)
    assert cost <= len(regs) * (overhead + 4)


def test_every_model_plans_within_its_limit():
    for model in MODELS.values():
        check(plan(model.registers, model.max_registers), list(model.registers), model.max_registers)


def test_sdm630_needs_few_requests():
    model = MODELS["sdm630"]
    blocks = plan(model.registers, model.max_registers, request_overhead_chars())
    assert len(blocks) <= 5
    assert [(b.start, b.count) for b in blocks][-1] == (0x0156, 40)


def test_small_gaps_are_bridged_large_ones_are_not():
    regs = [Register("A", 4, 0), Register("B", 4, 4), Register("C", 4, 100)]
    blocks = plan(regs, 80, request_overhead_chars())
    assert [(b.start, b.count) for b in blocks] == [(0, 6), (100, 2)]


def test_split_gives_one_block_per_register():
    regs = [Register("A", 4, 0), Register("B", 4, 2)]
    (block,) = plan(regs, 80)
    assert [(b.start, b.count) for b in split(block)] == [(0, 2), (2, 2)]


def test_wire_time_counts_every_character_and_a_silence_per_frame():
    block = make_block([Register("A", 4, 0)])          # 8-byte request, 9-byte reply
    char = 10 / 9600
    assert wire_time([block], char) == pytest.approx((8 + 9 + 2 * 3.5) * char)
    assert wire_time([block, block], char) == pytest.approx(2 * wire_time([block], char))
    fast = 10 / 38400                                   # above 19200 baud the silence is 1.75 ms
    assert wire_time([block], fast) == pytest.approx(17 * fast + 2 * 0.00175)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_planned_reading_beats_one_value_per_request_on_the_wire(key):
    model = MODELS[key]
    one = one_per_request(model.registers)
    assert [b.registers for b in one] == [(r,) for r in sorted(model.registers, key=lambda r: (r.fc, r.address))]
    char = 10 / 9600
    assert wire_time(plan(model.registers, model.max_registers), char) < wire_time(one, char)


def _seconds(blocks, char_time: float, per_request: float) -> float:
    return wire_time(blocks, char_time) + per_request * len(blocks)


def test_turnaround_counts_in_a_requests_cost():
    """A meter that takes 30 ms to answer makes every request dearer: the SDM630 is read in three
    requests, not the four that are cheapest when turnaround is left out, and three really are cheaper."""
    model = MODELS["sdm630"]
    line = LineCost(COMSETS[2].char_time)
    blind = plan(model.registers, model.max_registers, request_overhead_chars(line, 0.0))
    seeing = plan(model.registers, model.max_registers, request_overhead_chars(line, 0.0, 0.030))
    assert len(seeing) < len(blind)
    assert _seconds(seeing, line.char_time, 0.030) < _seconds(blind, line.char_time, 0.030)
