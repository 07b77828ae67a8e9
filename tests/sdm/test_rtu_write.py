"""FC 16 (write multiple registers): the echo must match the request exactly."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing import rtu
from tests.sdm.test_rtu import FakeLine

REQUEST = bytes.fromhex("01 10 00 14 00 02 04 40 e0 00 00 e7 66")   # id := 7 on an Eastron meter


def echo(slave=1, fc=0x10, address=0x0014, count=2):
    return add_crc(struct.pack(">BBHH", slave, fc, address, count))


def write(line):
    return rtu.write_exchange(line, 1, 0x0014, [0x40E0, 0x0000], timeout=0.01)


def test_a_good_echo_is_accepted_and_the_request_is_the_documented_frame():
    line = FakeLine(echo())
    write(line)
    assert line.written == [REQUEST]


@pytest.mark.parametrize("reply,error", [
    (b"", rtu.NoReply),
    (echo()[:5], rtu.ShortReply),
    (echo()[:-1] + bytes([echo()[-1] ^ 0xFF]), rtu.CRCError),
    (echo(slave=2), rtu.MalformedReply),
    (echo(fc=0x03), rtu.MalformedReply),
    (echo(address=0x0012), rtu.MalformedReply),
    (echo(count=1), rtu.MalformedReply),
    (echo() + b"\x01", rtu.MalformedReply),                     # another frame glued on
    (add_crc(bytes([1, 0x90, 1])), rtu.ExceptionReply),
])
def test_every_wrong_echo_is_its_own_error(reply, error):
    line = FakeLine(reply)
    with pytest.raises(error):
        write(line)
    assert line.settled == 1


def test_an_exception_reply_carries_its_code():
    with pytest.raises(rtu.ExceptionReply) as caught:
        write(FakeLine(add_crc(bytes([1, 0x90, 3]))))
    assert caught.value.code == rtu.ILLEGAL_DATA_VALUE


@given(st.integers(1, 247), st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123))
def test_build_write_lays_out_the_pdu_and_a_valid_crc(slave, start, values):
    frame = rtu.build_write(slave, start, values)
    assert frame[:7] == struct.pack(">BBHHB", slave, 0x10, start, len(values), 2 * len(values))
    assert list(struct.unpack(f">{len(values)}H", frame[7:-2])) == values
    assert rtu.crc_ok(frame)


@pytest.mark.parametrize("values", [[], [0x10000], [-1], [0] * 124])
def test_build_write_refuses_what_fc_16_cannot_carry(values):
    with pytest.raises(ValueError):
        rtu.build_write(1, 0, values)
