"""MBAP framing: golden frames written by hand, every check of a reply, stale replies, properties."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdm.framing import mbap, rtu
from tests.sdm.test_rtu import FakeLine
from tests.tcp_support import mbap as frame
from tests.tcp_support import mbap_registers


class FakeTransport(FakeLine):
    port = "tcp://gateway"
    kind = "tcp"
    is_open = True


# (tid, unit, fc, start, count) -> the request as the MODBUS TCP guide lays it out, byte by byte
GOLDEN_REQUESTS = [
    ((1, 1, 0x04, 0x0000, 2), "00 01 00 00 00 06 01 04 00 00 00 02"),
    ((2, 1, 0x03, 0xFC02, 1), "00 02 00 00 00 06 01 03 fc 02 00 01"),
    ((0x1234, 26, 0x03, 19000, 78), "12 34 00 00 00 06 1a 03 4a 38 00 4e"),
    ((0xFFFF, 26, 0x04, 0x0156, 4), "ff ff 00 00 00 06 1a 04 01 56 00 04"),
]


@pytest.mark.parametrize("args, golden", GOLDEN_REQUESTS)
def test_requests_match_golden_frames(args, golden):
    assert mbap.build_request(*args) == bytes.fromhex(golden)


# (request args, reply bytes by hand, registers)
GOLDEN_REPLIES = [
    ((1, 1, 0x04, 0x0000, 2), "00 01 00 00 00 07 01 04 04 43 67 80 00", [0x4367, 0x8000]),
    ((7, 26, 0x03, 19000, 2), "00 07 00 00 00 07 1a 03 04 43 66 80 00", [0x4366, 0x8000]),
    ((2, 1, 0x03, 0xFC02, 1), "00 02 00 00 00 05 01 03 02 00 70", [0x0070]),
]


@pytest.mark.parametrize("args, reply, registers", GOLDEN_REPLIES)
def test_golden_replies_give_their_registers(args, reply, registers):
    request = mbap.build_request(*args)
    assert mbap.read_reply(FakeLine(bytes.fromhex(reply)), request, deadline=0) == registers


REQUEST = mbap.build_request(5, 1, 0x04, 0, 2)
GOOD = mbap_registers(5, 1, 0x04, [0x4367, 0x8000])


@pytest.mark.parametrize("raw, error", [
    (b"", rtu.NoReply),
    (GOOD[:4], rtu.ShortReply),
    (GOOD[:-1], rtu.ShortReply),
    (frame(5, 1, GOOD[7:], protocol=1), rtu.MalformedReply),                 # not Modbus
    (frame(5, 1, GOOD[7:], length=1), rtu.MalformedReply),                   # length below any reply
    (frame(5, 1, GOOD[7:], length=255), rtu.MalformedReply),                 # length beyond any reply
    (mbap_registers(5, 2, 0x04, [0x4367, 0x8000]), rtu.MalformedReply),     # another unit id
    (mbap_registers(5, 1, 0x03, [0x4367, 0x8000]), rtu.MalformedReply),     # another function
    (mbap_registers(5, 1, 0x04, [1, 2, 3]), rtu.MalformedReply),            # byte count
    (frame(5, 1, bytes([0x04, 4, 0x43, 0x67, 0x80, 0, 0])), rtu.MalformedReply),  # length vs byte count
    (frame(5, 1, bytes([0x84, 2, 0])), rtu.MalformedReply),                 # exception of wrong size
    (mbap_registers(6, 1, 0x04, [0x4367, 0x8000]), rtu.MalformedReply),     # a newer transaction id
    (mbap_registers(4, 1, 0x04, [0x4367, 0x8000]), rtu.NoReply),            # only a stale reply
    (frame(5, 1, bytes([0x84, 2])), rtu.ExceptionReply),
    (frame(5, 1, bytes([0x84, 11])), mbap.GatewayNoReply),
    (frame(5, 1, bytes([0x84, 10])), mbap.GatewayNoReply),
])
def test_bad_replies_raise_their_own_error(raw, error):
    with pytest.raises(error) as caught:
        mbap.read_reply(FakeLine(raw), REQUEST, deadline=0)
    assert caught.value.kind in rtu.ERROR_KINDS


def test_exception_reply_carries_its_code_and_a_silent_target_counts_as_timeout():
    with pytest.raises(rtu.ExceptionReply) as caught:
        mbap.read_reply(FakeLine(frame(5, 1, bytes([0x84, 2]))), REQUEST, deadline=0)
    assert caught.value.code == rtu.ILLEGAL_DATA_ADDRESS
    with pytest.raises(rtu.NoReply) as caught:
        mbap.read_reply(FakeLine(frame(5, 1, bytes([0x84, 11]))), REQUEST, deadline=0)
    assert caught.value.kind == "timeout"


def test_stale_replies_are_skipped_and_the_real_one_taken():
    stale = mbap_registers(3, 1, 0x04, [0x1111, 0x2222]) + mbap_registers(4, 1, 0x04, [0x3333, 0x4444])
    line = FakeLine(stale + GOOD)
    assert mbap.read_reply(line, REQUEST, deadline=0) == [0x4367, 0x8000]


def test_a_stale_exception_is_skipped_too():
    line = FakeLine(frame(4, 1, bytes([0x84, 11])) + GOOD)
    assert mbap.read_reply(line, REQUEST, deadline=0) == [0x4367, 0x8000]


def test_stale_across_the_wrap_of_the_transaction_id():
    request = mbap.build_request(1, 1, 0x04, 0, 2)
    line = FakeLine(mbap_registers(0xFFFF, 1, 0x04, [9, 9]) + mbap_registers(1, 1, 0x04, [7, 8]))
    assert mbap.read_reply(line, request, deadline=0) == [7, 8]


def test_link_counts_its_own_transaction_ids_and_settles_after_a_failure():
    line = FakeTransport()
    link = mbap.MbapLink(line)
    for expected in (1, 2, 3):
        line.reply[:] = mbap_registers(expected, 9, 0x03, [expected])
        assert link.exchange(9, 0x03, 100, 1, timeout=0.01) == [expected]
        assert struct.unpack(">H", line.written[-1][:2])[0] == expected
    line.reply[:] = mbap_registers(99, 9, 0x03, [1])
    with pytest.raises(rtu.MalformedReply):
        link.exchange(9, 0x03, 100, 1, timeout=0.01)
    assert line.settled == 1 and line.cleared == 4
    assert link.cost.silence_chars == 0 and link.cost.round_trip > 0


def test_transaction_ids_wrap():
    line = FakeTransport()
    link = mbap.MbapLink(line)
    link._tid = 0xFFFE
    for expected in (0xFFFF, 0):
        line.reply[:] = mbap_registers(expected, 1, 0x04, [5])
        assert link.exchange(1, 0x04, 0, 1, timeout=0.01) == [5]


def test_only_register_reads_are_built():
    with pytest.raises(ValueError, match="not a register read"):
        mbap.build_request(1, 1, 0x06, 0, 1)


units = st.integers(0, 255)
tids = st.integers(0, 0xFFFF)
reads = st.tuples(tids, units, st.sampled_from([3, 4]), st.integers(0, 0xFFFF - 125), st.integers(1, 125))


@given(reads, st.data())
def test_round_trip_of_request_and_reply(args, data):
    tid, unit, fc, start, count = args
    request = mbap.build_request(*args)
    assert struct.unpack(">HHHBBHH", request) == (tid, 0, 6, unit, fc, start, count)
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    assert mbap.read_reply(FakeLine(mbap_registers(tid, unit, fc, words)), request, deadline=0) == words


@given(st.integers(0, 0xFFFF), st.integers(1, 0x7FFF))
def test_older_is_the_half_of_the_id_space_behind(current, back):
    assert mbap.is_older((current - back) % 0x10000, current)
    assert not mbap.is_older((current + back) % 0x10000, current)
    assert not mbap.is_older(current, current)


def mutated(good: bytes, data) -> bytes:
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    return bytes(raw[:cut]) + data.draw(st.binary(max_size=8))


@given(st.data())
def test_random_replies_never_yield_registers_unless_they_are_the_reply(data):
    tid, unit = data.draw(tids), data.draw(units)
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2))
    request = mbap.build_request(tid, unit, 0x04, 0, 2)
    good = mbap_registers(tid, unit, 0x04, words)
    raw = data.draw(st.one_of(st.binary(max_size=40), st.just(good).map(lambda g: mutated(g, data))))
    try:
        registers = mbap.read_reply(FakeLine(raw), request, deadline=0)
    except rtu.ModbusError:
        return
    # accepted: the frame taken, after whole frames of other transactions, is exactly
    # a well-formed reply to this request carrying these registers
    pos = 0
    while struct.unpack(">H", raw[pos:pos + 2])[0] != tid:
        pos += 6 + struct.unpack(">H", raw[pos + 4:pos + 6])[0]
    assert raw[pos:pos + 13] == mbap_registers(tid, unit, 0x04, registers)
