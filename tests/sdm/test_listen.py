"""Listen mode in-process: a foreign master's exchanges decoded, never answered, counted by kind."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from sdm.cache import RegisterCache
from sdm.framing.rtu import build_request
from sdm.hub import UNAVAILABLE, Hub
from sdm.listen import MISSED_LIMIT, Listener
from simulator.server import answer
from tests.fakes import MeterLine, meter_configs, virtual_meters

METERS = virtual_meters({1: "sdm630", 2: "sdm120"})   # id 2 is on the bus but not configured
BLOCKS = [(4, 0x0000, 18), (4, 0x0034, 2), (4, 0x0046, 6), (4, 0x0156, 4)]


def listener():
    configs = meter_configs({1: "sdm630"})
    hub = Hub(configs)
    cache = RegisterCache()
    return hub, cache, Listener(hub, MeterLine({}), configs, "bus", cache)


def exchange(slave, fc, start, count):
    request = build_request(slave, fc, start, count)
    return request, answer(METERS, request) or b""


def f32(value):
    """The float32 a value stands for (sdm publishes float32 in its shortest decimal form)."""
    return struct.pack(">f", value)


def floats(reply):
    """The reply's registers as float32 pairs, decoded with struct (not with sdm.encoding)."""
    data = reply[3:-2]
    return [struct.unpack(">f", data[i:i + 4])[0] for i in range(0, len(data), 4)]


def test_values_the_master_reads_are_published_and_the_rest_stays_unread():
    hub, cache, heard = listener()
    request, reply = exchange(1, 4, 0x0000, 18)
    assert heard.feed(request + reply, 10.0) is True
    values = hub.meters["M1"].values
    expected = floats(reply)
    names = ["VolLocPhsA", "VolLocPhsB", "VolLocPhsC", "AmpLocPhsA", "AmpLocPhsB", "AmpLocPhsC",
             "WLocPhsA", "WLocPhsB", "WLocPhsC"]
    assert [f32(values[name]) for name in names] == [f32(v) for v in expected]
    assert "TotkWhImport" not in values                         # the master did not read it
    assert cache.read("bus", 1, 4, 0, 18).words == struct.unpack(">18H", reply[3:-2])
    assert hub.meters["M1"].requests == 1


def test_unknown_ids_unanswered_and_unpaired_frames_are_counted_not_decoded():
    hub, _, heard = listener()
    for _ in range(3):
        request, reply = exchange(2, 4, 0x0000, 2)
        heard.feed(request + reply, 1.0)
    heard.feed(build_request(9, 4, 0, 2), 2.0)                   # nobody answers id 9
    _, stray = exchange(1, 4, 0x0046, 6)
    heard.feed(build_request(1, 4, 0, 2) + stray, 3.0)          # a reply that does not fit the request
    stats = heard.stats.snapshot()
    assert stats["UnknownIds"] == {"2": 3, "9": 1}
    assert stats["FramesByKind"]["unanswered"] == 1
    assert stats["FramesByKind"]["unpaired"] == 1
    assert stats["ForeignRequests"] == 5
    assert hub.meters["M1"].values == {}


def test_a_meter_that_stops_answering_the_master_turns_unavailable():
    hub, _, heard = listener()
    for second in range(MISSED_LIMIT + 1):
        heard.feed(build_request(1, 4, 0, 2), float(second))
    assert hub.meters["M1"].status == UNAVAILABLE
    assert hub.meters["M1"].errors["timeout"] == MISSED_LIMIT


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 9]), st.sampled_from(BLOCKS), st.booleans()), max_size=25))
def test_every_published_value_is_the_last_one_the_meter_sent(exchanges):
    hub, _, heard = listener()
    last = {}
    for slave, (fc, start, count), together in exchanges:
        request, reply = exchange(slave, fc, start, count)
        if together:
            heard.feed(request + reply, 1.0)
        else:
            heard.feed(request, 1.0)
            if reply:
                heard.feed(reply, 1.0)
        if slave == 1:
            for reg in METERS[1].model.registers:
                if reg.fc == fc and start <= reg.address and reg.end <= start + count:
                    offset = 3 + 2 * (reg.address - start)
                    last[reg.name] = struct.unpack(">f", reply[offset:offset + 4])[0]
    assert {name: f32(value) for name, value in hub.meters["M1"].values.items()} == \
        {name: f32(value) for name, value in last.items()}
    assert heard.stats.foreign_requests == len(exchanges)
    assert sum(heard.stats.unknown_ids.values()) == sum(1 for slave, _, _ in exchanges if slave != 1)
