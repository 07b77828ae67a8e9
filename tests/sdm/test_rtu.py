"""Framing against a fake line: each way a reply can be wrong is its own error."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing import rtu


class FakeLine:
    """Replays canned reply bytes; records what was written."""

    char_time = 10 / 9600

    def __init__(self, reply: bytes = b""):
        self.reply = bytearray(reply)
        self.written = []
        self.cleared = 0
        self.settled = 0

    def clear_input(self):
        self.cleared += 1

    def write(self, data):
        self.written.append(bytes(data))

    def read(self, size, deadline):
        chunk, self.reply[:] = bytes(self.reply[:size]), self.reply[size:]
        return chunk

    def settle(self, quiet, limit):
        self.settled += 1
        self.reply.clear()


def reply(slave=1, fc=4, words=(0x4366, 0x0000)):
    return add_crc(struct.pack(f">BBB{len(words)}H", slave, fc, 2 * len(words), *words))


def exchange(line, count=2):
    return rtu.exchange(line, 1, 4, 0, count, timeout=0.01)


def test_good_reply_gives_the_registers_and_clears_input_first():
    line = FakeLine(reply())
    assert exchange(line) == [0x4366, 0x0000]
    assert line.cleared == 1
    assert line.written == [bytes.fromhex("01 04 00 00 00 02 71 cb")]


@pytest.mark.parametrize("raw,error", [
    (b"", rtu.NoReply),
    (reply()[:2], rtu.ShortReply),
    (reply()[:7], rtu.ShortReply),
    (reply()[:-1] + bytes([reply()[-1] ^ 0xFF]), rtu.CRCError),
    (reply(slave=2), rtu.MalformedReply),
    (reply(fc=3), rtu.MalformedReply),
    (reply(words=(1, 2, 3)), rtu.MalformedReply),
    (add_crc(bytes([1, 0x84, 2])), rtu.ExceptionReply),
    (bytes([1, 0x84, 2, 0, 0]), rtu.CRCError),
])
def test_bad_replies_raise_their_own_error_and_settle_the_line(raw, error):
    line = FakeLine(raw)
    with pytest.raises(error) as caught:
        exchange(line)
    assert line.settled == 1
    assert caught.value.kind in rtu.ERROR_KINDS


def test_exception_reply_carries_its_code():
    with pytest.raises(rtu.ExceptionReply) as caught:
        exchange(FakeLine(add_crc(bytes([1, 0x84, 2]))))
    assert caught.value.code == rtu.ILLEGAL_DATA_ADDRESS


@given(st.binary(max_size=20))
def test_garbage_never_passes_as_registers(noise):
    line = FakeLine(noise)
    try:
        regs = exchange(line)
    except rtu.ModbusError:
        return
    # only a frame that is a complete, valid reply to this request may get through
    assert noise[:9] == reply(words=regs)


def test_build_request_refuses_other_functions():
    with pytest.raises(ValueError):
        rtu.build_request(1, 6, 0, 1)
