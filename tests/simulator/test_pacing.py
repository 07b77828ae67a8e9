"""Pacing: replies cost the wire time they would on RS485, against fixed deadlines."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdm.transport import Comset, silence_time
from simulator.pacing import PacedLine, Pacing, paced, pacing_for

BAUDS = [1200, 2400, 4800, 9600, 19200, 38400, 115200]


class ScriptedClock:
    """A clock whose sleeps overshoot by the next of the given amounts (then by nothing)."""

    def __init__(self, overshoots=(), now: float = 100.0):
        self.now = now
        self.overshoots = list(overshoots)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds + (self.overshoots.pop(0) if self.overshoots else 0.0)


class RecordingLine:
    def __init__(self, clock, incoming=b""):
        self.clock = clock
        self.incoming = incoming
        self.writes = []

    def read(self, timeout):
        data, self.incoming = self.incoming, b""
        return data

    def write(self, data):
        self.writes.append((self.clock(), bytes(data)))


comsets = st.builds(Comset, st.sampled_from(BAUDS), st.sampled_from(["N", "E"]))


@given(comsets, st.integers(1, 260), st.floats(0, 0.1), st.floats(0, 1000))
def test_schedule_hands_over_each_byte_when_it_has_crossed_the_wire(comset, size, turnaround, now):
    pacing = Pacing(comset.char_time, turnaround)
    pacing.received(8, now)
    plan = pacing.schedule(size, now)
    start = now + (8 + 3.5) * comset.char_time + turnaround
    if comset.baud > 19200:
        start = now + 8 * comset.char_time + 0.00175 + turnaround
    ends = [end for _, end in plan]
    assert ends == sorted(set(ends)) and ends[-1] == size
    assert all(b - a <= pacing.bytes_per_wake for a, b in zip([0] + ends, ends))
    for deadline, end in plan:
        assert deadline == pytest.approx(start + end * comset.char_time)
    assert len(plan) == math.ceil(size / pacing.bytes_per_wake)
    assert pacing.busy_until == plan[-1][0]


@given(comsets, st.integers(1, 8), st.floats(0, 0.05), st.floats(0, 0.2))
def test_reply_waits_for_the_request_silence_and_turnaround(comset, request_size, turnaround, lag):
    pacing = Pacing(comset.char_time, turnaround)
    pacing.received(request_size, 10.0)
    expected = 10.0 + request_size * comset.char_time + silence_time(comset.char_time) + turnaround
    assert pacing.reply_start(10.0) == pytest.approx(expected)
    # a reply computed late starts at once, never in the past
    assert pacing.reply_start(expected + lag) == pytest.approx(expected + lag)


def test_a_few_bytes_per_wake_up_at_common_rates():
    assert Pacing(Comset(9600, "N").char_time).bytes_per_wake >= 3
    assert Pacing(Comset(38400, "N").char_time).bytes_per_wake >= 10
    assert Pacing(Comset(1200, "E").char_time).bytes_per_wake == 1


@given(comsets, st.binary(min_size=1, max_size=255), st.lists(st.floats(0, 0.003), max_size=300))
def test_late_wake_ups_do_not_add_up(comset, reply, overshoots):
    clock = ScriptedClock(overshoots)
    line = RecordingLine(clock, incoming=b"\x01" * 8)
    paced = PacedLine(line, Pacing(comset.char_time), clock=clock, sleep=clock.sleep)
    assert paced.read(0.1) == b"\x01" * 8
    start = 100.0 + 8 * comset.char_time + silence_time(comset.char_time)
    paced.write(reply)
    assert b"".join(data for _, data in line.writes) == reply
    sent = 0
    for written_at, data in line.writes:
        sent += len(data)
        due = start + sent * comset.char_time
        assert due - 1e-9 <= written_at <= due + 0.003 + 1e-9   # one overshoot at most, never a sum


def test_without_baud_the_line_is_not_paced():
    line = RecordingLine(ScriptedClock())
    assert pacing_for(None) is None
    assert paced(line, pacing_for(None)) is line
    wrapped = paced(line, pacing_for(9600, "E", 0.01))
    assert isinstance(wrapped, PacedLine) and wrapped.writes is line.writes   # the rest is the line's
    assert wrapped.pacing.char_time == pytest.approx(11 / 9600) and wrapped.pacing.turnaround == 0.01


@pytest.mark.parametrize("baud,turnaround", [(None, 0.03), (0, 0.0), (-9600, 0.0), (9600, -0.001)])
def test_bad_pacing_options_are_refused(baud, turnaround):
    with pytest.raises(ValueError):
        pacing_for(baud, "N", turnaround)
