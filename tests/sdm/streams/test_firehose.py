"""The firehose buffer and route, in process."""

import json

import gevent
import pytest

from sdm.readings import rfc3339
from sdm.streams import firehose
from sdm.streams.firehose import EventBuffer, parse_integer


def test_buffer_keeps_only_the_newest_events_per_category():
    buffer = EventBuffer({"meterupdate": 5, "statusupdate": 2})
    for n in range(4):
        buffer.add("meterupdate", [{"n": n, "i": i} for i in range(3)])
    kept = [json.loads(e)["data"] for e in buffer.newer(["meterupdate"], 0)]
    assert kept == [{"n": 2, "i": 1}, {"n": 2, "i": 2}, {"n": 3, "i": 0}, {"n": 3, "i": 1}, {"n": 3, "i": 2}]


def test_each_publish_gets_a_later_stamp_even_within_one_millisecond(monkeypatch):
    monkeypatch.setattr(firehose.time, "time", lambda: 1_700_000_000.0)
    buffer = EventBuffer()
    buffer.add("meterupdate", [1, 2])
    buffer.add("statusupdate", [3])
    buffer.add("meterupdate", [4])
    events = [json.loads(e) for e in buffer.newer(["meterupdate", "statusupdate"], 0)]
    assert [(e["timestamp"], e["data"]) for e in events] == [
        (1_700_000_000_000, 1), (1_700_000_000_000, 2), (1_700_000_000_001, 3), (1_700_000_000_002, 4)]
    assert [json.loads(e)["data"] for e in buffer.newer(["meterupdate", "statusupdate"],
                                                          1_700_000_000_000)] == [3, 4]


@pytest.mark.parametrize("text,expected", [
    ("45", 45), ("+7", 7), ("0", None), ("121", None), ("", None), ("4.5", None), (" 4", None), ("4_0", None),
])
def test_parse_integer_follows_go_syntax(text, expected):
    assert parse_integer(text, 1, 120) == expected


def test_meter_events_leave_out_values_the_meter_could_not_give(live):
    live.hub.publish("Instrument1", {"VolLocPhsA": 230.25, "VolLocPhsB": None, "Freq": 50.0}, timestamp=1_700_000_000.5)
    body = live.get("/firehose?timeout=1&category=meterupdate&since_time=0").json()
    assert [e["data"] for e in body["events"]] == [
        {"DeviceId": 1, "Value": 230.25, "IEC61850": "VolLocPhsA", "Description": "L1 Voltage (V)",
         "ReadTimestamp": rfc3339(1_700_000_000.5), "Meter": "Instrument1"},
        {"DeviceId": 1, "Value": 50.0, "IEC61850": "Freq", "Description": "Frequency of supply voltages",
         "ReadTimestamp": rfc3339(1_700_000_000.5), "Meter": "Instrument1"},
    ]


def test_a_waiting_request_is_answered_by_the_next_publish(live):
    waiting = gevent.spawn(live.get, "/firehose?timeout=30&category=all")
    gevent.sleep(0.2)
    assert not waiting.ready()
    live.hub.publish_status({"Modbus": {"TotalModbusRequests": 3}})
    body = waiting.get(timeout=5).json()
    assert [(e["category"], e["data"]) for e in body["events"]] == [
        ("statusupdate", {"Modbus": {"TotalModbusRequests": 3}})]


def test_a_client_far_behind_catches_up_in_whole_publishes_without_a_loss():
    buffer = EventBuffer({"meterupdate": 1000, "statusupdate": 10})
    for n in range(30):
        buffer.add("meterupdate", [{"n": n, "part": k} for k in range(7)])   # 7 events per publish
    cursor, received = 0, []
    for _ in range(20):
        events = [json.loads(e) for e in buffer.newer(["meterupdate"], cursor, limit=20)]
        if not events:
            break
        assert len(events) <= 20 or len({e["timestamp"] for e in events}) == 1
        received.extend(events)
        cursor = events[-1]["timestamp"]
    assert [(e["data"]["n"], e["data"]["part"]) for e in received] == [(n, k) for n in range(30) for k in range(7)]


def test_one_publish_larger_than_the_limit_goes_out_whole():
    buffer = EventBuffer({"meterupdate": 1000, "statusupdate": 10})
    buffer.add("meterupdate", [{"k": k} for k in range(52)])
    assert len(buffer.newer(["meterupdate"], 0, limit=20)) == 52
