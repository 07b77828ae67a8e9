"""sdm.timing: the learned timeout and pause, against in-process model meters, and the state file."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sdm.timing import (
    CLEAN_TO_STEP,
    GAP_SLACK,
    MAX_PAUSE,
    PAUSE_MARGIN,
    PAUSE_RESOLUTION,
    RECHECK_FIRST,
    MeterTiming,
    TimingFile,
    percentile,
    restore_timing,
)

POLLER_GAP = 0.004      # what a request goes out later than the pause (the poller's silence check)
EXCHANGE = 0.1          # wire time of one exchange


class ModelMeter:
    """A meter that fails (timeout) when a request comes sooner than ``need`` after its last answer,
    polled as the poller does: after five failures in a row, the next request comes a second later."""

    def __init__(self, need: float, timing: MeterTiming):
        self.need, self.timing = need, timing
        self.now = 0.0
        self.lost = 0
        self.in_a_row = 0

    def run(self, seconds: float) -> int:
        """Poll for ``seconds`` of model time; the exchanges lost in that time."""
        lost_before, end = self.lost, self.now + seconds
        while self.now < end:
            gap = self.timing.pause + POLLER_GAP + (1.0 if self.in_a_row >= 5 else 0.0)
            self.now += gap
            if gap < self.need:
                self.now += self.timing.timeout
                self.timing.failed("timeout", gap, self.now)
                self.lost += 1
                self.in_a_row += 1
            else:
                self.in_a_row = 0
                self.now += EXCHANGE
                self.timing.answered(0.01, gap, self.now)
        return self.lost - lost_before


@settings(max_examples=60, deadline=None)
@given(need=st.floats(0.0, 0.15), default=st.sampled_from([0.02, 0.06]))
def test_pause_converges_just_above_the_meters_need_and_then_costs_at_most_one_exchange_an_hour(need, default):
    timing = MeterTiming(default, 0.3)
    meter = ModelMeter(need, timing)
    meter.run(300)                               # five minutes of learning
    assert timing.pause + POLLER_GAP >= need     # what it uses now works
    # the search stops within PAUSE_RESOLUTION, and the result keeps PAUSE_MARGIN above a pause that failed
    assert timing.pause <= max(need - POLLER_GAP, 0) + PAUSE_RESOLUTION + PAUSE_MARGIN
    assert meter.lost <= 60                      # a meter needing twice its default takes a while
    hours = 6
    assert meter.run(hours * 3600) <= hours      # once learned: at most one lost exchange per hour


def test_one_chance_failure_does_not_cost_a_fast_meter_its_speed():
    timing = MeterTiming(0.06, 0.3)
    meter = ModelMeter(0.0, timing)
    while timing.pause >= 0.06:
        meter.run(0.2)
    timing.failed("timeout", timing.pause, meter.now)   # a busy host, once, during the first trial
    meter.run(60)
    assert timing.pause == 0.0


def test_a_meter_that_needs_no_pause_is_read_without_one_within_a_minute():
    timing = MeterTiming(0.06, 0.3)
    meter = ModelMeter(0.0, timing)
    meter.run(60)
    assert timing.pause == 0.0 and meter.lost == 0


def test_a_meter_needing_60_ms_is_learned_within_10_ms():
    timing = MeterTiming(0.06, 0.3)
    meter = ModelMeter(0.06, timing)
    meter.run(600)
    assert abs(timing.pause + POLLER_GAP - 0.06) <= 0.010


def test_a_fixed_pause_never_moves():
    timing = MeterTiming(0.06, 0.3, fixed_pause=0.03)
    meter = ModelMeter(0.05, timing)
    meter.run(120)
    assert timing.pause == 0.03 and not timing.learning
    assert meter.lost > 100                      # it keeps failing: the user's figure is obeyed


def test_the_proven_pause_grows_on_a_second_failure_run_only_and_no_trial_while_failing():
    timing = MeterTiming(0.06, 0.3)
    for _ in range(5):
        timing.failed("timeout", 0.061, 1.0)
    assert timing.pause == 0.06                  # one run of failures may be chance
    timing.answered(0.01, 0.061, 1.5)
    timing.failed("timeout", 0.061, 2.0)
    assert timing.pause == 0.09
    for _ in range(CLEAN_TO_STEP - 1):
        timing.answered(0.01, timing.pause, 2.0)
    assert timing.pause == 0.09                  # not yet clean long enough for a trial


def test_a_request_that_waited_for_another_meter_says_nothing_about_the_pause():
    timing = MeterTiming(0.06, 0.3)
    for _ in range(5 * CLEAN_TO_STEP):
        timing.answered(0.01, 0.06 + GAP_SLACK + 0.05, 1.0)
    timing.failed("timeout", 0.5, 2.0)
    assert timing.pause == 0.06


def test_exception_replies_are_no_sign_of_a_short_pause():
    timing = MeterTiming(0.06, 0.3)
    timing.failed("exception", 0.06, 1.0)
    assert timing.pause == 0.06


def test_the_pause_does_not_grow_without_bound():
    timing = MeterTiming(0.06, 0.3)
    for step in range(200):
        timing.failed("crc", timing.pause, float(step))
        timing.answered(0.01, timing.pause, float(step))
    assert timing.pause == MAX_PAUSE


@settings(max_examples=200, deadline=None)
@given(samples=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=300),
       ceiling=st.floats(0.05, 2.0), floor=st.floats(0.0, 0.1))
def test_timeout_stays_between_floor_and_ceiling_and_above_every_turnaround_it_can(samples, ceiling, floor):
    timing = MeterTiming(0.06, ceiling, floor)
    for sample in samples:
        timing.answered(sample, None, 0.0)
    assert timing.floor <= timing.timeout <= ceiling
    assert timing.timeout >= min(ceiling, max(timing.samples, default=ceiling))


def test_the_configured_timeout_applies_until_learned_and_after_a_timeout():
    timing = MeterTiming(0.06, 0.3)
    for _ in range(19):
        timing.answered(0.02, None, 0.0)
    assert timing.timeout == 0.3
    timing.answered(0.02, None, 0.0)
    assert timing.timeout < 0.1
    timing.failed("timeout", None, 1.0)
    assert timing.timeout == 0.3                 # the retry waits the whole configured time
    timing.answered(0.02, None, 2.0)
    assert timing.timeout < 0.1


def test_a_jittery_meter_never_meets_a_learned_timeout_shorter_than_its_turnaround():
    import random
    rng = random.Random(5)
    timing = MeterTiming(0.06, 0.3)
    misses = 0
    for _ in range(5000):
        turnaround = rng.uniform(0.02, 0.12)
        if turnaround > timing.timeout:
            misses += 1
            timing.failed("timeout", None, 0.0)
        timing.answered(turnaround, None, 0.0)
    assert misses == 0 and 0.12 <= timing.timeout <= 0.3


@given(st.lists(st.floats(0, 10), min_size=1), st.floats(0, 1))
def test_percentile_is_one_of_the_values_and_ordered(values, q):
    assert percentile(values, q) in values
    assert percentile(values, 0) == min(values) and percentile(values, 1) == max(values)


def test_state_file_round_trip_and_another_model_is_ignored(tmp_path):
    learned = MeterTiming(0.06, 0.3)
    ModelMeter(0.03, learned).run(300)
    store = TimingFile(tmp_path)
    store.save({"house/1": {"model": "sdm630", **learned.to_state()}})
    again = TimingFile(tmp_path)
    assert again.entry("house", 1, "sdm120") is None
    fresh = MeterTiming(0.06, 0.3)
    restore_timing(fresh, again.entry("house", 1, "sdm630"), "test", clock=lambda: 0.0)
    assert (fresh.pause, fresh.good, fresh.bad) == (learned.pause, learned.good, learned.bad)
    assert fresh.timeout == learned.timeout
    assert fresh.hold_until >= RECHECK_FIRST     # a restored, converged pause is not re-searched at once


def test_saving_keeps_the_entries_of_other_buses(tmp_path):
    store = TimingFile(tmp_path)
    store.save({"a/1": {"model": "sdm630", **MeterTiming(0.06, 0.3).to_state()}})
    TimingFile(tmp_path).save({"b/1": {"model": "sdm120", **MeterTiming(0.06, 0.3).to_state()}})
    assert set(json.loads((tmp_path / "timing.json").read_text())["meters"]) == {"a/1", "b/1"}


def test_a_fixed_pause_ignores_the_saved_one_but_keeps_turnarounds(tmp_path):
    saved = {"model": "sdm630", "pause": 0.01, "good": 0.01, "bad": 0.005, "turnarounds": [0.02] * 30}
    timing = MeterTiming(0.06, 0.3, fixed_pause=0.04)
    restore_timing(timing, saved, "test")
    assert timing.pause == 0.04 and timing.timeout < 0.3


def test_broken_state_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "timing.json").write_text("{not json")
    assert TimingFile(tmp_path).entries == {}
    (tmp_path / "timing.json").write_text(json.dumps({"version": 99, "meters": {}}))
    assert TimingFile(tmp_path).entries == {}
    timing = MeterTiming(0.06, 0.3)
    restore_timing(timing, {"good": -1, "bad": None}, "bus b, meter m (id 1)")
    restore_timing(timing, {"good": "x"}, "bus b, meter m (id 1)")
    assert timing.pause == 0.06
    assert caplog.text.count("saved timing ignored") == 2
