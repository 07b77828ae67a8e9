"""The simulator's counter glitches happen as their flags say, and the counter guard catches each."""

from __future__ import annotations

import math

import pytest

from sdm.encoding import decode
from sdm.meters.registry import lookup
from sdm.sanity import COUNTERS, DROP, INVALID, JUMP, RESET, CounterGuard, CounterPolicy
from simulator.cli import build_meters, counter_limits, glitches_from_args, main, parser
from simulator.meters import VirtualMeter
from simulator.physics import SPIKE_FACTOR, EnergyGlitches, Physics
from tests.fakes import FrozenClock

DZG = lookup("dzg")


def physics(clock: FrozenClock, model_key: str = "sdm630", **glitches) -> Physics:
    model = lookup(model_key)
    return Physics(model.phases, seed=4, clock=clock, glitches=EnergyGlitches(**glitches),
                   counter_limits=counter_limits(model))


def counters(values: dict) -> dict:
    return {name: value for name, value in values.items() if name in COUNTERS}


def test_a_spike_multiplies_every_counter_by_1000_for_one_reading_only():
    clock = FrozenClock(0.0)
    sim = physics(clock, spike=10.0)
    clock.now = 9.0
    before = counters(sim.sample())
    clock.now = 10.0
    spiked = counters(sim.serve(COUNTERS))
    for name, value in before.items():
        assert spiked[name] == pytest.approx(sim.values[name] * SPIKE_FACTOR)
        assert spiked[name] >= value * SPIKE_FACTOR or value == 0.0
    assert counters(sim.serve(COUNTERS)) == counters(sim.values)  # the next reading is true again
    clock.now = 11.0
    assert all(v < 1e7 for v in counters(sim.serve(COUNTERS)).values())


def test_a_zero_glitch_reads_0_once():
    clock = FrozenClock(0.0)
    sim = physics(clock, zero=5.0)
    clock.now = 5.0
    assert set(counters(sim.sample()).values()) != {0.0}          # the true values stay true
    assert set(counters(sim.serve(COUNTERS)).values()) == {0.0}
    clock.now = 6.0
    assert min(counters(sim.serve(COUNTERS))["TotkWhImport" + p] for p in ("", "PhsA")) > 0


def test_a_nan_glitch_reads_nan_once_in_the_registers_too():
    clock = FrozenClock(0.0)
    sim = physics(clock, nan=5.0)
    meter = VirtualMeter(lookup("sdm630"), 1, sim)
    reg = lookup("sdm630").register("TotkWhImport")
    clock.now = 5.0
    assert math.isnan(decode(meter.read(4, reg.address, 2), reg.encoding))
    assert decode(meter.read(4, reg.address, 2), reg.encoding) > 0      # once only


def test_a_one_reading_glitch_shows_once_on_each_counter_whichever_request_reads_it():
    clock = FrozenClock(0.0)
    model = lookup("sdm630")
    sim = physics(clock, spike=1.0)
    meter = VirtualMeter(model, 1, sim)
    clock.now = 1.0
    imports = model.register("TotkWhImport")
    phase = model.register("TotkWhImportPhsA")
    voltage_block = meter.read(4, 0x0000, 6)                     # no counter here: glitch still pending
    assert decode(voltage_block[0:2], model.register("VolLocPhsA").encoding) < 300
    first = decode(meter.read(4, imports.address, 2), imports.encoding)
    again = decode(meter.read(4, imports.address, 2), imports.encoding)
    later = decode(meter.read(4, phase.address, 2), phase.encoding)
    assert first == pytest.approx(again * SPIKE_FACTOR, rel=1e-6)
    assert later > 1e5                                           # its own first read after the glitch


def test_a_reset_restarts_every_counter_from_zero_and_they_count_on():
    clock = FrozenClock(0.0)
    sim = physics(clock, reset=30.0)
    clock.now = 29.0
    assert sim.sample()["TotkWhImport"] > 100
    clock.now = 30.0
    after = counters(sim.sample())
    assert set(after.values()) == {0.0}
    clock.now = 90.0
    later = counters(sim.sample())
    assert 0 < later["TotkWhImport"] < 1.0
    clock.now = 150.0
    assert sim.sample()["TotkWhImport"] > later["TotkWhImport"]


def test_a_drop_still_halves_every_counter_once():
    clock = FrozenClock(0.0)
    sim = physics(clock, drop=10.0)
    clock.now = 9.999
    before = sim.sample()["TotkWhImport"]
    clock.now = 10.0
    assert sim.sample()["TotkWhImport"] == pytest.approx(before / 2, rel=1e-3)


def test_only_dzg_counters_can_wrap_and_they_wrap_at_their_register_limit():
    limits = counter_limits(DZG)
    assert set(limits) == {n for n in DZG.names if n in COUNTERS}
    assert all(limit == pytest.approx(2 ** 32 / 1000) for limit in limits.values())
    for key in ("sdm630", "sdm120", "sdm220", "sdm230", "sdm530", "janitza"):
        assert counter_limits(lookup(key)) == {}                  # float32: no wrap, only less resolution


def test_with_the_wrap_option_counters_start_below_the_limit_and_roll_over_to_zero_about_then():
    clock = FrozenClock(0.0)
    sim = physics(clock, "dzg", wrap=60.0)
    limit = 2 ** 32 / 1000
    start = sim.sample()
    assert all(limit - 100 < start[name] < limit for name in counter_limits(DZG))
    clock.now = 30.0                                              # half way: not yet
    assert sim.sample()["TotkWhImport"] > limit - 100
    clock.now = 200.0                                             # the power drifts: give it room
    wrapped = sim.sample()["TotkWhImport"]
    assert 0 <= wrapped < 1.0
    meter = VirtualMeter(DZG, 1, sim)
    reg = DZG.register("TotkWhImport")
    assert decode(meter.read(3, reg.address, 2), reg.encoding) == pytest.approx(wrapped, abs=0.001)


def test_the_flags_build_the_glitches_and_refuse_nonsense(capsys):
    args = parser().parse_args(["--link", "x", "--energy-spike", "3", "--energy-zero", "4", "--energy-reset", "5",
                                "--energy-drop", "6", "--energy-wrap", "7", "--energy-nan", "8"])
    assert glitches_from_args(args) == EnergyGlitches(drop=6.0, spike=3.0, zero=4.0, nan=8.0, reset=5.0, wrap=7.0)
    with pytest.raises(ValueError, match="--energy-spike"):
        glitches_from_args(parser().parse_args(["--link", "x", "--energy-spike", "-1"]))
    with pytest.raises(ValueError, match="wrap"):
        build_meters("sdm630:1,janitza:2", None, [], EnergyGlitches(wrap=1.0))
    meters = build_meters("sdm630:1,dzg:2", None, [], EnergyGlitches(wrap=1.0))
    assert meters[2].physics.counter_limits and not meters[1].physics.counter_limits
    assert main(["--link", "/nonexistent/x", "-d", "sdm120:1", "--energy-wrap", "3"]) == 2
    assert "no meter of -d has a counter that can wrap" in capsys.readouterr().err


@pytest.mark.parametrize("glitch", ["spike", "zero", "drop", "reset", "wrap"])
def test_the_guard_publishes_none_of_the_simulators_glitches_and_each_true_reset_once(glitch):
    model_key = "dzg" if glitch == "wrap" else "sdm630"
    model = lookup(model_key)
    clock = FrozenClock(0.0)
    sim = physics(clock, model_key, **{glitch: 100.0})
    guard = CounterGuard(CounterPolicy(confirm_readings=3, confirm_seconds=5.0))
    names = [n for n in model.names if n in COUNTERS]
    last = {}
    truths = {name: set() for name in names}
    resets = []
    for step in range(1, 600):
        clock.now = step * 0.5
        raw = {name: sim.serve([name])[name] for name in names}
        for name in names:
            truths[name].add(sim.values[name])
        out, events = guard.apply("m", model, raw, 1e9 + clock.now)
        resets.extend(e.name for e in events if e.kind == RESET)
        for name in names:
            value = out[name]
            if value is None:
                continue
            assert value > 0 and value in truths[name]             # never a glitched figure
            if name in last and value < last[name]:
                assert [e.kind for e in events if e.name == name] == [RESET]
            last[name] = value
    held = {"spike": JUMP, "zero": INVALID, "drop": DROP, "reset": DROP, "wrap": DROP}[glitch]
    assert guard.counts("m")[held] > 0
    assert len(resets) == len(set(resets))                       # at most one reset per counter
    if glitch in ("spike", "zero"):
        assert resets == []
    moving = [name for name in names if sim.values[name] > 0.01]
    assert all(last[name] == raw[name] for name in moving)     # in the end the truth is published
    if glitch in ("drop", "reset"):
        assert set(moving) <= set(resets)
    if glitch == "wrap":
        wrapped = {name for name in moving if sim.values[name] < 1e6}
        assert "TotkWhImport" in wrapped and wrapped <= set(resets)
