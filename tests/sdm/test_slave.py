"""A served unit answers like its meter from the cache, and refuses what it cannot vouch for."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdm.cache import RegisterCache
from sdm.config import DENY, FORWARD, MeterConfig
from sdm.meters.eastron import METER_CODE_ADDRESS
from sdm.meters.registry import lookup
from sdm.slave import Refusal, Responder, ServeStats

SDM630 = lookup("sdm630")
HOUSE = MeterConfig(device_id=1, type_name="SDM630", model=SDM630, name="house", bus="cabinet")


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def responder(writes=DENY, forward=None, max_age=2.0):
    cache, clock = RegisterCache(), Clock()
    served = Responder({7: HOUSE}, cache, max_age, writes, ServeStats("test"), forward, clock)
    return served, cache, clock


def read(fc, start, count):
    return struct.pack(">BHH", fc, start, count)


def refusal(served, pdu, unit=7):
    with pytest.raises(Refusal) as caught:
        served.respond(unit, pdu, "client")
    return caught.value.code, caught.value.reason


def test_a_fresh_block_is_served_under_the_unit_id_as_the_meter_sent_it():
    served, cache, clock = responder()
    cache.store("cabinet", 1, 4, 0, list(range(100, 140)), clock.now - 1.5)
    assert served.respond(7, read(4, 2, 4), "client") == bytes((4, 8)) + struct.pack(">4H", 102, 103, 104, 105)
    assert served.stats.answered == 1 and served.stats.age_max == pytest.approx(1.5)


def test_stale_never_read_unknown_and_oversized_requests_are_refused_with_their_codes():
    served, cache, clock = responder()
    cache.store("cabinet", 1, 4, 0, [1] * 40, clock.now - 2.5)
    assert refusal(served, read(4, 0, 2)) == (0x0B, "stale")
    assert refusal(served, read(4, 0x48, 2)) == (0x0B, "never_read")      # in the map, never read
    assert refusal(served, read(4, 0x0200, 2)) == (0x02, "address")       # not in the SDM630's map
    assert refusal(served, read(3, 0x0000, 2)) == (0x02, "address")
    assert refusal(served, read(4, 0, 81)) == (0x03, "count")              # over the SDM630's 80
    assert refusal(served, read(4, 0, 2), unit=8) == (0x0A, "unit")
    assert refusal(served, bytes((0x2B, 0x0E))) == (0x01, "function")
    assert served.stats.snapshot()["RefusedByReason"]["stale"] == 1


def test_the_meter_code_is_the_models_own():
    served, _, _ = responder()
    assert served.respond(7, read(3, METER_CODE_ADDRESS, 1), "c") == bytes((3, 2)) + struct.pack(">H", 0x0070)


def test_writes_are_refused_by_default_and_settings_even_when_forwarded():
    served, _, _ = responder()
    assert refusal(served, struct.pack(">BHH", 6, 0xF010, 3)) == (0x01, "write_denied")
    calls = []

    def forward(meter, write):
        calls.append((meter.name, write.start, write.words, write.client))
        return 0

    served, _, _ = responder(FORWARD, forward)
    assert refusal(served, struct.pack(">BHHB2H", 16, 0x0014, 2, 4, 0x4000, 0)) == (0x01, "setting")
    assert calls == []
    pdu = struct.pack(">BHHB2H", 16, 0xF010, 2, 4, 0, 3)
    assert served.respond(7, pdu, "10.0.0.9:4000") == pdu[:5]
    assert served.respond(7, struct.pack(">BHH", 6, 0xF010, 3), "c") == struct.pack(">BHH", 6, 0xF010, 3)
    assert calls[0] == ("house", 0xF010, [0, 3], "10.0.0.9:4000")


def test_a_forwarded_write_the_meter_rejects_returns_its_code():
    served, _, _ = responder(FORWARD, lambda meter, write: 0x02)
    assert refusal(served, struct.pack(">BHH", 6, 0xF010, 3)) == (0x02, "write_failed")


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=260))
def test_any_pdu_gets_an_answer_or_a_refusal_never_a_crash(unit, pdu):
    served, cache, clock = responder(FORWARD, lambda meter, write: 0)
    cache.store("cabinet", 1, 4, 0, [5] * 80, clock.now)
    try:
        answer = served.respond(unit, pdu, "fuzz")
    except Refusal as refused:
        assert 1 <= refused.code <= 0x0B
    else:
        assert answer[0] == pdu[0]
