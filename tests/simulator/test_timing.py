"""simulator/timing.py: the per-meter timing options and what a difficult meter does."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.timing import (
    ANSWER,
    GARBLE,
    IGNORE,
    MinPause,
    Sulk,
    Tempers,
    Turnaround,
    garbled,
    parse_min_pause,
    parse_sulk,
    parse_turnaround,
)


def test_turnaround_forms():
    assert parse_turnaround("1=20") == (1, Turnaround(0.02, 0.02))
    assert parse_turnaround("7=20-120") == (7, Turnaround(0.02, 0.12))
    assert parse_turnaround("3=20-40+400@0.01") == (3, Turnaround(0.02, 0.04, 0.4, 0.01))


@pytest.mark.parametrize("text", ["20", "1=", "0=20", "1=x", "1=120-20", "1=20+400", "1=20-40+400@2", "300=5"])
def test_bad_turnaround_is_a_clear_error(text):
    with pytest.raises(ValueError, match="--turnaround"):
        parse_turnaround(text)


def test_min_pause_and_sulk_forms():
    assert parse_min_pause("1=60") == (1, MinPause(0.06))
    assert parse_min_pause("2=60:garble") == (2, MinPause(0.06, True))
    assert parse_sulk("1=60:3") == (1, Sulk(0.06, 3.0))
    for bad in ("1=60:maybe", "1=-5", "x=60"):
        with pytest.raises(ValueError, match="--min-pause"):
            parse_min_pause(bad)
    for bad in ("1=60", "1=60:", "1=a:3"):
        with pytest.raises(ValueError, match="--sulk"):
            parse_sulk(bad)


@given(st.floats(0, 500), st.floats(0, 500), st.integers(0, 2**32))
def test_turnaround_draws_stay_in_range(a, b, seed):
    low, high = sorted((a, b))
    shape = Turnaround(low / 1000, high / 1000, 0.9, 0.1)
    rng = random.Random(seed)
    for _ in range(20):
        value = shape.draw(rng)
        assert low / 1000 <= value <= high / 1000 or value == 0.9


def test_min_pause_ignores_or_garbles_a_request_that_comes_too_soon():
    tempers = Tempers(min_pauses={1: MinPause(0.06), 2: MinPause(0.06, garble=True)})
    assert tempers.verdict(1, 10.0)[0] == ANSWER            # never answered yet
    tempers.answered(1, 10.0)
    tempers.answered(2, 10.0)
    assert tempers.verdict(1, 10.05)[0] == IGNORE
    assert tempers.verdict(2, 10.05)[0] == GARBLE
    assert tempers.verdict(1, 10.061)[0] == ANSWER
    assert tempers.verdict(3, 10.0) == (ANSWER, None)      # a meter without options


def test_a_sulking_meter_stays_silent_for_its_time():
    tempers = Tempers(sulks={1: Sulk(0.06, 3.0)})
    tempers.answered(1, 0.0)
    assert tempers.verdict(1, 0.03)[0] == IGNORE
    assert tempers.verdict(1, 2.9)[0] == IGNORE              # long after its answer, but still sulking
    assert tempers.verdict(1, 3.1)[0] == ANSWER


def test_garbled_reply_fails_its_crc():
    from umodbus.client.serial.redundancy_check import add_crc

    from sdm.framing.rtu import crc_ok
    reply = add_crc(bytes([1, 4, 2, 0, 7]))
    assert crc_ok(reply) and not crc_ok(garbled(reply)) and len(garbled(reply)) == len(reply)


@given(st.integers(1, 247), st.integers(0, 500), st.integers(0, 500), st.integers(0, 2000),
       st.sampled_from(["0.01", "0.5", "1"]))
def test_turnaround_specs_read_back(slave, a, b, long, chance):
    low, high = sorted((a, b))
    assert parse_turnaround(f"{slave}={low}-{high}+{long}@{chance}") == (
        slave, Turnaround(low / 1000, high / 1000, long / 1000, float(chance)))
