"""Cutting a foreign master's byte stream into frames: every valid frame back, noise never a frame."""

import struct

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing.rtu import build_request, build_write, crc_ok
from sdm.framing.sniff import cut, frame_kind, frame_lengths, missing


def reply(slave, fc, words):
    return add_crc(struct.pack(f">BBB{len(words)}H", slave, fc, 2 * len(words), *words))


FRAMES = st.one_of(
    st.builds(lambda s, fc, a, n: ("request", build_request(s, fc, a, n)),
              st.integers(1, 247), st.sampled_from([3, 4]), st.integers(0, 0xFFFF), st.integers(1, 125)),
    st.builds(lambda s, fc, w: ("reply", reply(s, fc, w)),
              st.integers(1, 247), st.sampled_from([3, 4]), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125)),
    st.builds(lambda s, a, w: ("request", build_write(s, a, w)),
              st.integers(1, 247), st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20)),
    st.builds(lambda s, fc, c: ("exception", add_crc(bytes((s, fc | 0x80, c)))),
              st.integers(1, 247), st.sampled_from([3, 4, 16]), st.integers(1, 11)),
)


def unambiguous(frames) -> bool:
    """RTU has no length field: a frame whose first bytes also pass as a shorter frame of its
    function code (a CRC coincidence, 1 in 65536) cannot be told apart by anyone; left out."""
    return not any(crc_ok(frame[:n]) for _, frame in frames for n in frame_lengths(frame) if n < len(frame))


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=6))
def test_frames_run_together_are_cut_apart_and_told_by_kind(frames):
    assume(unambiguous(frames))
    result = cut(b"".join(frame for _, frame in frames))
    assert result.frames == [frame for _, frame in frames]
    assert result.garbled == 0
    assert [frame_kind(frame)[0] for frame in result.frames] == [kind for kind, _ in frames]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_and_every_frame_found_has_a_good_crc(noise):
    result = cut(noise)
    assert sum(len(frame) for frame in result.frames) + result.garbled == len(noise)


def test_a_garbled_frame_between_two_good_ones_is_counted_not_decoded():
    good = build_request(1, 4, 0, 2)
    bad = bytearray(reply(1, 4, [1, 2]))
    bad[4] ^= 0xFF
    result = cut(good + bytes(bad) + good)
    assert result.frames[0] == good and result.frames[-1] == good
    assert result.garbled > 0


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=4), st.data())
def test_a_reader_never_waits_for_more_bytes_than_the_frame_under_way_has(frames, data):
    assume(unambiguous(frames))
    stream = b"".join(frame for _, frame in frames)
    assert missing(stream) == 0
    last = frames[-1][1]
    keep = data.draw(st.integers(1, len(last) - 1))
    prefix = stream[:len(stream) - len(last) + keep]
    assert 1 <= missing(prefix) <= len(last) - keep
