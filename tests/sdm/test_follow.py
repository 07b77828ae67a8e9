"""Following the firehose: URLs, read times, events, and replies that are not what they should be."""

import json

import pytest

from sdm.follow import BadReply, Follower, parse_base_url, read_time_ms, to_sample
from sdm.readings import ZERO_TIME, rfc3339
from sdm.store import Sample

MS = 1_490_177_859_911    # 2017-03-22T10:17:39.911Z


def meter_event(stamp, device=1, name="VolLocPhsA", value=230.1, read=MS):
    return {"timestamp": stamp, "category": "meterupdate",
            "data": {"DeviceId": device, "Value": value, "IEC61850": name, "Description": "L1 Voltage (V)",
                     "ReadTimestamp": read}}


@pytest.mark.parametrize("url, expected", [
    ("localhost:8080", ("localhost", 8080, "")),
    ("http://10.0.0.5:8080/", ("10.0.0.5", 8080, "")),
    ("http://pi.local/meters/", ("pi.local", 80, "/meters")),
    ("[::1]:8081", ("::1", 8081, "")),
])
def test_gateway_urls(url, expected):
    assert parse_base_url(url) == expected


@pytest.mark.parametrize("url, message", [
    ("https://pi:8080", "only http://"), (":8080", "names no host"), ("localhost:80x", "bad port")])
def test_bad_gateway_urls(url, message):
    with pytest.raises(ValueError, match=message):
        parse_base_url(url)


@pytest.mark.parametrize("text, ms", [
    ("2017-03-22T11:17:39.911271769+01:00", MS),      # Go: nanoseconds and an offset
    ("2017-03-22T10:17:39.911Z", MS),
    ("2017-03-22T10:17:39Z", MS - 911),
    ("2017-03-22T06:17:39.9119-04:00", MS),
    (MS, MS), (float(MS), MS),
    (ZERO_TIME, None), ("yesterday", None), ("2017-03-22 10:17:39", None), (None, None), (True, None),
    (-5, None), (float("nan"), None),
])
def test_read_times_in_ms(text, ms):
    assert read_time_ms(text) == ms


def test_the_gateways_own_read_times_come_back_to_the_millisecond():
    for seconds in (1_700_000_000.0, 1_700_000_000.5, 1_700_000_000.999, 1_490_177_859.911):
        assert read_time_ms(rfc3339(seconds)) == round(seconds * 1000)


def test_meter_events_become_samples_and_everything_else_is_ignored():
    assert to_sample(meter_event(1, read="2017-03-22T10:17:39.911Z")) == Sample(1, "VolLocPhsA", MS, 230.1)
    assert to_sample(meter_event(MS + 5, read=ZERO_TIME)) == Sample(1, "VolLocPhsA", MS + 5, 230.1)
    assert to_sample(meter_event(1, value=7)) == Sample(1, "VolLocPhsA", MS, 7.0)
    status = {"timestamp": 1, "category": "statusupdate", "data": {"Uptime": 5}}
    for junk in (status, None, [], "x", {"data": "x"}, meter_event(1, device=300), meter_event(1, device="1"),
                 meter_event(1, name=""), meter_event(1, value=None), meter_event(1, value=True),
                 meter_event(1, value=float("inf")), meter_event(None, read=None)):
        assert to_sample(junk) is None, junk


def reply(body, status=200):
    return status, body if isinstance(body, bytes) else json.dumps(body).encode()


def test_a_reply_moves_the_cursor_to_its_newest_event():
    follower = Follower("localhost:1", "meterupdate", 45)
    samples = follower.take(reply({"events": [meter_event(101), meter_event(103, name="Freq", value=50.0),
                                              {"timestamp": 102, "category": "statusupdate", "data": {}}]}))
    assert [s.name for s in samples] == ["VolLocPhsA", "Freq"]
    assert follower.since == 103 and follower.ignored == 1
    assert follower.take(reply({"timeout": "no events before timeout", "timestamp": 999})) == []
    assert follower.since == 103


@pytest.mark.parametrize("body, status, message", [
    ({"error": "Invalid timeout arg.  Must be 1-120."}, 400, "the gateway says: Invalid timeout arg"),
    (b"404 page not found\n", 404, "HTTP 404"),
    (b"<html>hello</html>", 200, "not a JSON object"),
    ([1, 2], 200, "not a JSON object"),
    ({"events": "many"}, 200, "neither events nor a timeout"),
    (b"", 200, "not a JSON object"),
])
def test_replies_that_are_no_firehose_answer_are_bad_replies(body, status, message):
    follower = Follower("localhost:1", "meterupdate", 45, since=7)
    with pytest.raises(BadReply, match=message):
        follower.take(reply(body, status))
    assert follower.since == 7
