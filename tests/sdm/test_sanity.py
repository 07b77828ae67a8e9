"""What a reading may publish: physical bounds, and the energy-counter rules of CounterGuard."""

from __future__ import annotations

import math
import struct
from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdm.encoding import F32, float32_div, uint32
from sdm.measurements import CATALOGUE
from sdm.meters.model import MeterModel, check_model
from sdm.meters.registry import MODELS, lookup
from sdm.sanity import (
    COUNTERS,
    DROP,
    INVALID,
    JUMP,
    KINDS,
    RESET,
    STEP,
    CounterEvent,
    CounterGuard,
    CounterPolicy,
    Rating,
    Sanity,
    bounded,
    bounds,
    rating_of,
    screen,
)

SDM630 = lookup("sdm630")
SDM120 = lookup("sdm120")
HOUR = 3600.0

# -- physical bounds --------------------------------------------------------------------------------

FLOAT32_LOWEST = -struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]   # -3.4e38, as garbled replies carry
FLOAT32_TINIEST = struct.unpack(">f", b"\x00\x00\x00\x01")[0]   # 1.4e-45


@pytest.mark.parametrize("model, name, good, bad", [
    (SDM630, "VolLocPhsA", [0.0, 230.1, 400.0, 999.0], [FLOAT32_LOWEST, -0.1, 1000.5]),
    (SDM630, "AngLocPhsB", [-1.0, -0.93, 0.0, 1.0], [-FLOAT32_LOWEST, 1.01, -1.2]),
    (SDM630, "TotPF", [0.5], [2.0]),
    (SDM630, "Freq", [40.0, 49.98, 60.0, 70.0], [FLOAT32_TINIEST, 0.0, 39.9, 70.1]),
    (SDM630, "ThdVolPhsC", [0.0, 2.5, 100.0], [-0.5, 100.5]),
    (SDM630, "ThdVol", [3.0], [250.0]),
    (SDM630, "TotPhAng", [-180.0, 0.0, 179.9], [-180.5, 181.0]),
    (lookup("sdm230"), "PhAngPhsA", [25.8], [360.0]),
    (SDM630, "AmpLocPhsA", [0.0, 63.0, 199.0], [201.0, 1e6, -201.0]),
    (SDM120, "AmpLocPhsA", [44.9, 89.0], [91.0]),
    (SDM630, "WLocPhsA", [-20000.0, 50000.0], [60000.0, FLOAT32_LOWEST]),
    (SDM630, "TotW", [-60000.0, 150000.0], [180000.0]),
    (SDM630, "VALocPhsB", [23000.0], [1e7]),
    (SDM630, "VArLocPhsC", [-5000.0], [-1e5]),
    (lookup("dzg"), "TotWImport", [120000.0], [4e5]),
    (SDM630, "TotkWhImport", [0.0, 12345.6], [-1.0, 2e9]),
])
def test_values_within_the_physics_of_their_kind_pass_and_others_are_null(model, name, good, bad):
    for value in good:
        assert bounded(model, name, value) == value, value
    for value in bad + [math.nan, math.inf, -math.inf, None]:
        assert bounded(model, name, value) is None, value


def test_every_measurement_of_every_model_has_bounds():
    for name in CATALOGUE:
        low, high = bounds(name, rating_of(SDM630))
        assert low < high
    for model in MODELS.values():
        rating = rating_of(model)
        assert rating.phases == model.phases and rating.max_current > 0 and rating.nominal_voltage > 0
        for name in model.names:
            bounds(name, rating)


def test_a_meters_own_current_rating_widens_its_bounds():
    assert bounded(SDM630, "AmpLocPhsA", 600.0) is None
    ct = rating_of(SDM630, max_current=400.0)
    assert bounded(SDM630, "AmpLocPhsA", 600.0, ct) == 600.0
    assert bounded(SDM630, "TotW", 500000.0, ct) == 500000.0


@pytest.mark.parametrize("current", [0.0, -5.0, math.nan, math.inf])
def test_a_nonsense_current_rating_is_a_clear_error(current):
    with pytest.raises(ValueError, match="maximum current"):
        rating_of(SDM630, max_current=current)


def test_a_model_table_without_a_sensible_rating_is_refused():
    with pytest.raises(ValueError, match="rating"):
        check_model(MeterModel(**{**SDM630.__dict__, "max_current": 0.0}))


def test_screen_nulls_impossible_values_reports_them_and_leaves_counters_to_the_guard():
    values = {"VolLocPhsA": FLOAT32_LOWEST, "AngLocPhsA": 0.9, "Freq": math.nan, "AmpLocPhsA": None,
              "TotkWhImport": 0.0}
    result = screen(SDM630, values)
    assert result.values == {"VolLocPhsA": None, "AngLocPhsA": 0.9, "Freq": None, "AmpLocPhsA": None,
                             "TotkWhImport": 0.0}
    assert set(result.refused) == {"VolLocPhsA", "Freq"}
    assert result.refused["VolLocPhsA"] == FLOAT32_LOWEST


def test_the_counters_are_every_energy_measurement_of_the_catalogue():
    energy = {name for name in CATALOGUE if "kWh" in name or "kVArh" in name}
    assert COUNTERS == energy
    assert len(COUNTERS) == 24
    for model in MODELS.values():
        assert {n for n in model.names if CATALOGUE[n].unit in ("kWh", "kvarh")} <= COUNTERS


def test_register_resolution_and_wrap_limits():
    assert uint32(1000).wraps_at == pytest.approx(4294967.296)
    assert F32.wraps_at is None and float32_div(1000).wraps_at is None
    assert uint32(1000).resolution(123.0) == 0.001
    assert F32.resolution(5000.0) == 2.0 ** -11       # float32 steps of 0.00049 kWh near 5 MWh
    assert F32.resolution(1e7) == 1.0                 # and whole kWh near 10 GWh
    assert float32_div(1000).resolution(5000.0) == pytest.approx(2.0 ** -1 / 1000)


# -- the counter guard ------------------------------------------------------------------------------

POLICY = CounterPolicy()          # the defaults: N = 5 readings over T = 60 s


class Feed:
    """Readings of one meter into a guard at a steady pace; what was published, and the events."""

    def __init__(self, guard: Optional[CounterGuard] = None, model: MeterModel = SDM630, key: str = "Instrument1",
                 start: float = 1_700_000_000.0):
        self.guard = guard or CounterGuard()
        self.model = model
        self.key = key
        self.now = start
        self.published: List[dict] = []
        self.events: List[CounterEvent] = []

    def read(self, values: dict, seconds: float = 1.0) -> dict:
        self.now += seconds
        out, events = self.guard.apply(self.key, self.model, values, self.now)
        self.published.append(out)
        self.events.extend(events)
        return out

    def settle(self, name: str, value: float, rate_per_s: float = 0.001) -> float:
        """Read a steadily rising counter until it is accepted; its value then."""
        for _ in range(200):
            value += rate_per_s
            if self.read({name: value})[name] == value:
                return value
        raise AssertionError("never accepted")

    def kinds(self) -> List[str]:
        return [event.kind for event in self.events]


def test_a_first_value_is_published_at_once_by_default_nothing_to_compare_it_with():
    feed = Feed()
    outs = [feed.read({"TotkWhImport": 1000.0 + i * 0.001, "VolLocPhsA": 230.0})["TotkWhImport"]
            for i in range(3)]
    assert outs == [1000.0, 1000.001, 1000.002]
    assert feed.events == []                   # a first value is nothing to announce


def test_a_first_value_waits_for_first_readings_consistent_readings_when_asked():
    feed = Feed(guard=CounterGuard(CounterPolicy(first_readings=3)))
    raws = [5000.0 * 1000, 5000.0, 5000.001, 5000.002, 5000.003]    # a spike as the very first reading
    outs = [feed.read({"TotkWhImport": raw})["TotkWhImport"] for raw in raws]
    assert outs == [None, None, None, 5000.002, 5000.003]             # the spike never shows
    assert feed.events == []


def test_values_that_are_not_counters_pass_unchanged_and_absent_counters_stay_absent():
    feed = Feed()
    out = feed.read({"VolLocPhsA": 231.0, "Freq": math.nan})
    assert out.keys() == {"VolLocPhsA", "Freq"} and out["VolLocPhsA"] == 231.0


@pytest.mark.parametrize("glitch, kind", [
    (lambda v: v / 2, DROP), (lambda v: v * 1000, JUMP), (lambda v: 0.0, INVALID),
    (lambda v: math.nan, INVALID), (lambda v: math.inf, INVALID), (lambda v: None, INVALID),
    (lambda v: -v, INVALID), (lambda v: v - 1.0, DROP), (lambda v: v + 50.0, JUMP),
])
@pytest.mark.parametrize("model_key", sorted(MODELS))
def test_no_glitch_of_any_kind_reaches_an_output_for_any_counter_of_any_model(glitch, kind, model_key):
    model = MODELS[model_key]
    names = [n for n in model.names if n in COUNTERS]
    feed = Feed(model=model)
    values = {name: 500.0 + i for i, name in enumerate(names)}
    for _ in range(61):
        values = {name: value + 0.001 for name, value in values.items()}
        feed.read(values)
    assert feed.published[-1] == values
    accepted = dict(values)
    for _ in range(3):                         # glitching three readings in a row is still a glitch
        out = feed.read({name: glitch(value) for name, value in values.items()})
        assert out == accepted
    values = {name: value + 0.002 for name, value in values.items()}
    assert feed.read(values) == values
    assert feed.kinds() == [kind] * (3 * len(names))
    assert all(e.held and e.name in e.message() and "held back" in e.message() for e in feed.events)
    assert feed.guard.counts("Instrument1")[kind] == 3 * len(names)


def test_a_counter_that_never_left_zero_stays_null_without_being_counted_as_a_glitch():
    feed = Feed(model=SDM120)
    for _ in range(100):
        assert feed.read({"TotkWhExport": 0.0})["TotkWhExport"] is None
    assert feed.guard.counts("Instrument1")[INVALID] == 0
    value = feed.settle("TotkWhExport", 0.0)
    feed.read({"TotkWhExport": 0.0})
    assert feed.guard.counts("Instrument1")[INVALID] == 1
    assert feed.published[-1]["TotkWhExport"] == value


def test_a_real_reset_is_published_exactly_once_after_n_readings_over_t_seconds():
    feed = Feed()
    old = feed.settle("TotkWhImport", 4000.0)
    new = 0.0
    outs = []
    for _ in range(100):                      # the meter was cleared: 0, then counting up again
        outs.append(feed.read({"TotkWhImport": new})["TotkWhImport"])
        new += 0.002
    resets = [e for e in feed.events if e.kind == RESET]
    assert len(resets) == 1
    reset = resets[0]
    assert reset.previous == old and reset.published == reset.raw and reset.raw < old
    first_counted = outs.index(reset.published)
    assert outs[:first_counted] == [old] * first_counted                 # held until confirmed
    assert all(b > a for a, b in zip(outs[first_counted:], outs[first_counted + 1:]))  # then it counts on
    assert first_counted >= 60                                           # no sooner than T
    assert "reset accepted" in reset.message() and "Instrument1" in reset.message()
    assert feed.guard.counts("Instrument1")[RESET] == 1
    assert feed.guard.confirmations == 1


def test_a_reset_needs_consecutive_consistent_readings_a_flapping_drop_never_confirms():
    feed = Feed()
    value = feed.settle("TotkWhImport", 4000.0)
    for i in range(300):                       # a meter that answers half its count every other time
        value += 0.001
        feed.read({"TotkWhImport": value / 2 if i % 2 else value})
    assert RESET not in feed.kinds()
    assert feed.published[-1]["TotkWhImport"] == pytest.approx(value - 0.001)


def test_a_drop_that_goes_down_again_restarts_the_confirmation():
    feed = Feed(guard=CounterGuard(CounterPolicy(confirm_readings=3, confirm_seconds=2.0)))
    old = feed.settle("TotkWhImport", 4000.0)
    for raw in (100.0, 100.01, 50.0, 50.01):   # 50 does not continue from 100.01: a new run
        assert feed.read({"TotkWhImport": raw})["TotkWhImport"] == old
    assert feed.read({"TotkWhImport": 50.02})["TotkWhImport"] == 50.02
    assert feed.kinds()[-1] == RESET


def test_a_run_that_rises_faster_than_the_meter_can_count_never_confirms():
    feed = Feed(guard=CounterGuard(CounterPolicy(confirm_readings=3, confirm_seconds=2.0)))
    old = feed.settle("TotkWhImport", 4000.0)
    for raw in (100.0, 200.0, 300.0, 400.0, 500.0):   # 100 kWh a second: no SDM630 counts that fast
        assert feed.read({"TotkWhImport": raw})["TotkWhImport"] == old
    assert RESET not in feed.kinds()


def test_a_higher_count_read_consistently_is_accepted_once_as_a_step():
    feed = Feed()
    old = feed.settle("TotkWhImport", 100.0)
    swapped = 90000.0                          # another meter with a larger count was fitted
    outs = [feed.read({"TotkWhImport": swapped + i * 0.001})["TotkWhImport"] for i in range(80)]
    steps = [e for e in feed.events if e.kind == STEP]
    assert len(steps) == 1 and steps[0].previous == old
    assert outs.count(old) >= 60 and outs[-1] == swapped + 79 * 0.001
    assert feed.kinds().count(JUMP) == outs.count(old)


def test_the_rise_is_bounded_by_the_rated_power_times_the_margin_times_the_time():
    # SDM120: 45 A x 230 V x margin 2 = 20.7 kW: in one hour at most 20.7 kWh (+ slack)
    feed = Feed(model=SDM120)
    value = feed.settle("TotkWhImport", 10.0)
    assert feed.read({"TotkWhImport": value + 20.6}, seconds=HOUR)["TotkWhImport"] == value + 20.6
    value += 20.6
    assert feed.read({"TotkWhImport": value + 20.8}, seconds=HOUR)["TotkWhImport"] == value
    assert feed.kinds() == [JUMP]
    # the bound grows with the time since the last *accepted* value
    assert feed.read({"TotkWhImport": value + 41.0}, seconds=HOUR)["TotkWhImport"] == value + 41.0


def test_a_phase_counter_may_rise_by_one_phases_share_only():
    # SDM630: 3 x 230 V x 100 A x 2 = 138 kW in total, 46 kW per phase
    feed = Feed()
    phase = feed.settle("TotkWhImportPhsA", 10.0)
    assert feed.read({"TotkWhImportPhsA": phase + 47.0}, seconds=HOUR)["TotkWhImportPhsA"] == phase
    total = feed.settle("TotkWhImport", 10.0)
    assert feed.read({"TotkWhImport": total + 137.0}, seconds=HOUR)["TotkWhImport"] == total + 137.0


def test_a_meters_own_rating_overrides_the_models():
    ct = Rating(phases=3, nominal_voltage=230.0, max_current=1000.0)
    feed = Feed(guard=CounterGuard(ratings={"Instrument1": ct}))
    value = feed.settle("TotkWhImport", 10.0)
    assert feed.read({"TotkWhImport": value + 1000.0}, seconds=HOUR)["TotkWhImport"] == value + 1000.0
    assert feed.guard.rating("Instrument1", SDM630) == ct
    assert feed.guard.rating("Instrument2", SDM630) == rating_of(SDM630)


def test_a_step_down_within_the_registers_resolution_is_neither_published_nor_counted():
    feed = Feed()
    value = feed.settle("TotkWhImport", 5000.0)
    assert feed.read({"TotkWhImport": value - 0.0005})["TotkWhImport"] == value
    assert feed.events == []


def test_a_model_change_of_a_meter_starts_its_counters_afresh():
    feed = Feed()
    feed.settle("TotkWhImport", 5000.0)
    feed.model = lookup("janitza")
    assert feed.read({"TotkWhImport": 10.0})["TotkWhImport"] == 10.0    # a first value: not a drop
    assert feed.guard.counts("Instrument1") == {kind: 0 for kind in KINDS}


def test_meters_are_kept_apart_and_forgotten_on_request():
    guard = CounterGuard()
    one, two = Feed(guard, key="one"), Feed(guard, key="two")
    one.settle("TotkWhImport", 100.0)
    two.read({"TotkWhImport": 50.0})
    assert guard.last_accepted("two", "TotkWhImport") == 50.0      # not a drop of meter one
    assert guard.last_accepted("one", "TotkWhImport") is not None
    guard.forget("one")
    assert guard.last_accepted("one", "TotkWhImport") is None


@pytest.mark.parametrize("policy", [
    dict(confirm_readings=1), dict(confirm_readings=2.5), dict(first_readings=0), dict(confirm_seconds=-1.0),
    dict(confirm_seconds=math.nan), dict(power_margin=0.5), dict(slack_kwh=-0.1),
])
def test_a_nonsense_policy_is_a_clear_error(policy):
    with pytest.raises(ValueError):
        CounterPolicy(**policy)


# -- properties -------------------------------------------------------------------------------------

# A first value confirmed too, so that a glitch as the very first reading is held back like any other.
SMALL = CounterPolicy(confirm_readings=3, confirm_seconds=5.0, first_readings=2)
RATE_KW = rating_of(SDM120).total_power * SMALL.power_margin / 1000.0

GLITCHES = ["drop", "spike", "zero", "nan", "inf", "none"]
reading = st.tuples(
    st.floats(min_value=0.0, max_value=10.0),         # seconds since the previous reading
    st.floats(min_value=0.0, max_value=0.05),         # what the meter counted meanwhile
    # mostly true readings, so that runs of them confirm resets and steps now and then
    st.sampled_from(["count"] * 12 + GLITCHES + ["reset", "swap"]),
)


def _raws(steps) -> List[Tuple[float, Optional[float]]]:
    """Timestamps and raw readings of a meter that counts on, with glitches and true resets."""
    now, count, out = 0.0, 100.0, []
    for dt, rise, what in steps:
        now += dt
        count += rise
        if what == "reset":
            count = 0.001
        elif what == "swap":          # another meter with a far higher count
            count += 5000.0
        raw = {"drop": count / 2, "spike": count * 1000, "zero": 0.0, "nan": math.nan,
               "inf": math.inf, "none": None}.get(what, count)
        out.append((now, raw))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(reading, max_size=120))
def test_published_counters_never_fall_except_at_a_confirmed_reset_nor_rise_faster_than_the_bound(steps):
    guard = CounterGuard(SMALL)
    raws = _raws(steps)
    published: List[Optional[float]] = []
    events: List[List[CounterEvent]] = []
    for now, raw in raws:
        out, evs = guard.apply("m", SDM120, {"TotkWhImport": raw}, 1e9 + now)
        published.append(out["TotkWhImport"])
        events.append(evs)
    times = [now for now, _ in raws]
    last_accept = 0.0
    for i, value in enumerate(published):
        kinds = [e.kind for e in events[i]]
        before = published[i - 1] if i else None
        if before is not None:
            assert value is not None, "a published counter never turns null again"
        if value is None:
            continue
        assert math.isfinite(value) and value > 0
        if before is not None and value < before:
            assert kinds == [RESET]
            _assert_confirmed(events, times, i, DROP)
        if kinds == [STEP]:
            _assert_confirmed(events, times, i, JUMP)
        elif before is not None and value > before:
            slack = SMALL.slack_kwh + 2 * F32.resolution(before)
            assert value - before <= RATE_KW * (times[i] - last_accept) / 3600.0 + slack
        if value == raws[i][1]:              # the reading itself was accepted
            last_accept = times[i]


def _assert_confirmed(events, times, i, held_kind) -> None:
    """At least N - 1 readings held back as ``held_kind`` right before, spanning at least T seconds."""
    k = 0
    while i - k - 1 >= 0 and [e.kind for e in events[i - k - 1]] == [held_kind]:
        k += 1
    assert k >= SMALL.confirm_readings - 1
    assert times[i] - times[i - k] >= SMALL.confirm_seconds


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0.5, max_value=10.0), st.floats(min_value=0.0, max_value=0.05),
                          st.sampled_from([None, "drop", "spike", "zero", "nan", "inf", "none", "negative"])),
                min_size=1, max_size=150))
def test_an_isolated_glitch_never_reaches_an_output(steps):
    """A meter that counts on, with glitches never two in a row: only true readings are ever shown."""
    guard = CounterGuard(SMALL)
    now, count, previous_glitched = 1e9, 100.0, False
    true_values = set()
    for dt, rise, glitch in steps:
        now += dt
        count += rise
        glitch = None if previous_glitched else glitch
        previous_glitched = glitch is not None
        raw = {None: count, "drop": count / 2, "spike": count * 1000, "zero": 0.0, "nan": math.nan,
               "inf": math.inf, "none": None, "negative": -count}[glitch]
        if glitch is None:
            true_values.add(count)
        out, _ = guard.apply("m", SDM120, {"TotkWhImport": raw}, now)
        assert out["TotkWhImport"] is None or out["TotkWhImport"] in true_values


# -- the hub's one call -----------------------------------------------------------------------------


def test_one_check_per_reading_applies_bounds_then_the_guard_and_counts_both():
    sanity = Sanity(CounterGuard(CounterPolicy(confirm_readings=2, confirm_seconds=1.0)))
    now = 1e9
    for i in range(3):
        now += 1
        checked = sanity.check("I1", SDM630, {"TotkWhImport": 10.0 + i * 0.001, "Freq": 50.0}, now)
    assert checked.values == {"TotkWhImport": 10.002, "Freq": 50.0} and checked.events == []
    checked = sanity.check("I1", SDM630, {"TotkWhImport": 0.0, "Freq": FLOAT32_TINIEST,
                                          "AngLocPhsA": -FLOAT32_LOWEST}, now + 1)
    assert checked.values == {"TotkWhImport": 10.002, "Freq": None, "AngLocPhsA": None}
    assert checked.refused == {"Freq": FLOAT32_TINIEST, "AngLocPhsA": -FLOAT32_LOWEST}
    assert [e.kind for e in checked.events] == [INVALID]
    assert sanity.counts("I1") == {"bounds": 2, "drop": 0, "jump": 0, "invalid": 1, "reset": 0, "step": 0}
    assert sanity.counts("I2")["bounds"] == 0
    sanity.forget("I1")
    assert sanity.counts("I1") == {"bounds": 0, **{kind: 0 for kind in KINDS}}


def test_a_meters_rating_override_reaches_the_bounds_too():
    ct = Rating(phases=3, nominal_voltage=230.0, max_current=2000.0)
    sanity = Sanity(CounterGuard(ratings={"big": ct}))
    assert sanity.check("big", SDM630, {"AmpLocPhsA": 1500.0}, 1e9).values == {"AmpLocPhsA": 1500.0}
    assert sanity.check("small", SDM630, {"AmpLocPhsA": 1500.0}, 1e9).values == {"AmpLocPhsA": None}
