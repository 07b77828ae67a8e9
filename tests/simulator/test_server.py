"""The slave loop: answers like a meter, stays silent where a meter would."""

import struct

from hypothesis import assume, example, given
from hypothesis import strategies as st

from sdm.framing.rtu import build_request, crc_ok
from simulator.server import FrameFinder, answer
from tests.fakes import virtual_meters

METERS = virtual_meters({1: "sdm630", 2: "sdm120", 26: "janitza", 36: "dzg"})


def test_owned_id_gets_its_registers():
    reply = answer(METERS, build_request(1, 4, 0, 2))
    assert reply[:3] == bytes([1, 4, 4]) and crc_ok(reply)
    volts = struct.unpack(">f", reply[3:7])[0]
    assert 200 < volts < 260


def test_foreign_id_stays_silent():
    assert answer(METERS, build_request(9, 4, 0, 2)) is None


def test_single_phase_meter_answers_zero_for_l2_inside_its_space():
    reply = answer(METERS, build_request(2, 4, 0, 6))
    assert reply[2] == 12 and reply[7:11] == b"\0\0\0\0"


def test_address_outside_the_space_is_exception_02():
    assert answer(METERS, build_request(1, 4, 0x0200, 2))[1:3] == bytes([0x84, 2])
    assert answer(METERS, build_request(36, 3, 0x0014, 2))[1:3] == bytes([0x83, 2])   # DZG demand register
    assert answer(METERS, build_request(26, 4, 19000, 2))[1:3] == bytes([0x84, 1])    # Janitza has no FC 04


def test_request_over_the_model_limit_is_exception_03():
    assert answer(METERS, build_request(1, 4, 0, 82))[1:3] == bytes([0x84, 3])
    assert answer(METERS, build_request(1, 4, 0, 80))[1] == 4


def test_meter_code_only_where_documented():
    assert answer(METERS, build_request(1, 3, 0xFC02, 1))[3:5] == b"\x00\x70"    # SDM630
    assert answer(METERS, build_request(2, 3, 0xFC02, 1))[3:5] == b"\x00\x20"    # SDM120
    no_code = virtual_meters({5: "sdm530"})
    assert answer(no_code, build_request(5, 3, 0xFC02, 1))[1:3] == bytes([0x83, 1])


def test_bad_crc_gets_no_answer():
    frame = bytearray(build_request(1, 4, 0, 2))
    frame[-1] ^= 0x55
    assert list(FrameFinder().feed(bytes(frame), 0.0)) == []


@given(st.binary(max_size=30), st.binary(max_size=30))
@example(bytes.fromhex("1ffc3fa6aa45"), b"")   # noise + the request's first bytes make a valid frame
def test_frames_are_found_behind_any_noise(before, after):
    request = build_request(1, 4, 0, 2)
    stream = before + request + after
    # noise that itself forms a CRC-valid frame overlapping the request is taken, as on a real line
    assume(not any(crc_ok(stream[i:i + 8]) for i in range(len(before))))
    found = list(FrameFinder().feed(stream, 0.0))
    assert request in found


def test_stale_partial_frame_is_dropped():
    finder = FrameFinder()
    request = build_request(1, 4, 0, 2)
    assert list(finder.feed(request[:5], 0.0)) == []
    assert list(finder.feed(request, 1.0)) == [request]
