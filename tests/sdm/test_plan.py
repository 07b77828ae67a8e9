"""The block planner: never splits a value, never exceeds a limit, covers every register."""

from hypothesis import given
from hypothesis import strategies as st

from sdm.meters import MODELS
from sdm.meters.model import Register
from sdm.plan import plan, request_overhead_chars, split


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
