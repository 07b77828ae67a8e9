"""Encoding as the simulator does and decoding as the gateway does give the value back."""

import math
import struct
from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from sdm.encoding import F32, decode, encode, float32_div, shortest_float32, uint32

registers = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))


def as_float32(value: float) -> float:
    return struct.unpack(">f", struct.pack(">f", value))[0]


@given(st.floats(width=32, allow_nan=False))
@example(0.0)
@example(-0.0)
@example(math.inf)
@example(-math.inf)
@example(1e-45)                       # smallest subnormal
@example(1.1754942e-38)               # largest subnormal
@example(3.4028234663852886e38)       # largest float32
def test_float32_round_trip(value):
    decoded = decode(encode(value, F32), F32)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)   # same bits, sign of zero included


def test_float32_nan_stays_nan():
    assert math.isnan(decode(encode(math.nan, F32), F32))


@given(registers)
def test_float32_registers_round_trip(regs):
    value = decode(regs, F32)
    if math.isnan(value):
        return
    assert encode(value, F32) == regs


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_shortest_float32_is_short_and_exact(value):
    short = shortest_float32(value)
    assert as_float32(short) == as_float32(value)
    assert len(repr(short)) <= len(repr(value))


def test_float32_is_high_word_first():
    assert encode(230.0, F32) == (0x4366, 0x0000)
    assert decode((0x4366, 0x0000), F32) == 230.0


@given(st.integers(0, 0xFFFFFFFF), st.sampled_from([1, 10, 100, 1000]))
def test_uint32_round_trip(raw, divisor):
    enc = uint32(divisor)
    value = raw / divisor
    assert decode(encode(value, enc), enc) == value
    assert encode(value, enc) == (raw >> 16, raw & 0xFFFF)


def test_uint32_clamps_what_a_counter_cannot_hold():
    enc = uint32(1000)
    assert encode(-5.0, enc) == (0, 0)
    assert encode(1e12, enc) == (0xFFFF, 0xFFFF)
    assert encode(math.nan, enc) == (0, 0)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_float32_with_divisor_round_trip(kwh):
    """Janitza energy: the register holds Wh as float32, we publish kWh."""
    enc = float32_div(1000)
    meant = Decimal(repr(shortest_float32(as_float32(kwh * 1000)))) / 1000
    assert Decimal(repr(decode(encode(kwh, enc), enc))) == meant


def test_a_janitza_energy_is_published_as_the_decimal_the_meter_meant():
    registers = encode(1215491.1, F32)          # the meter's Wh, as it stores them
    assert repr(decode(registers, float32_div(1000.0))) == "1215.4911"
    assert repr(1215491.1 / 1000.0) == "1215.4911000000002"   # what plain float division gives


DIVISORS = st.sampled_from([10.0, 100.0, 1000.0, 10000.0])


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), DIVISORS)
def test_a_scaled_float32_is_its_shortest_decimal_divided_exactly(value, divisor):
    shown = shortest_float32(value)
    decoded = decode(encode(value, F32), float32_div(divisor))
    meant = Decimal(repr(shown)) / Decimal(int(divisor))
    if decoded == 0.0 or abs(meant) < Decimal("1e-300"):     # below the smallest double: rounds to 0
        assert float(meant) == decoded
        return
    assert Decimal(repr(decoded)) == meant


@given(st.integers(0, 0xFFFFFFFF), DIVISORS)
def test_a_scaled_uint32_is_the_count_divided_exactly(count, divisor):
    decoded = decode(struct.unpack(">HH", struct.pack(">I", count)), uint32(divisor))
    assert Decimal(repr(decoded)) == Decimal(count) / Decimal(int(divisor))
