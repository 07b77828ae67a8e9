"""End to end: /ws and /firehose of a real gateway reading the simulator."""

import json
import math
import socket
import time

import gevent
import pytest
import websocket

from sdm.measurements import describe
from sdm.meters.registry import lookup
from sdm.sanity import COUNTERS
from tests.support import GOSDM_KEYS, reading_values, wait_until

DEVICES = "sdm630:1,sdm120:2,janitza:26"
NAMES = {1: lookup("sdm630").names, 2: lookup("sdm120").names, 26: lookup("janitza").names}


@pytest.fixture
def bus(simulator, gateway):
    sim = simulator(DEVICES)
    return gateway(sim.link, DEVICES)


def ws_connect(gw, query: str = "", **options) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{gw.port}/ws{query}", timeout=10, **options)


def frames(ws, count: int):
    return [json.loads(ws.recv()) for _ in range(count)]


def is_status(obj: dict) -> bool:
    return "Modbus" in obj


def check_meter_frame(msg: dict, now_ms: int) -> None:
    assert list(msg) == ["DeviceId", "Value", "IEC61850", "Description", "Timestamp", "Meter"]
    assert msg["DeviceId"] in NAMES
    assert msg["IEC61850"] in NAMES[msg["DeviceId"]]
    assert msg["Description"] == describe(msg["IEC61850"]).description
    assert isinstance(msg["Value"], float) and math.isfinite(msg["Value"])
    assert isinstance(msg["Timestamp"], int) and now_ms - 60_000 < msg["Timestamp"] <= now_ms


def test_ws_frames_carry_every_field_and_start_with_the_current_readings(bus):
    status_keys = list(bus.get("/status").json())
    ws = ws_connect(bus)
    try:
        received = frames(ws, 400)
    finally:
        ws.close()
    now_ms = int(time.time() * 1000)
    first_status = next(i for i, m in enumerate(received) if is_status(m))
    snapshot = received[:first_status]
    for device_id, names in NAMES.items():
        raw = reading_values(bus.get(f"/last/{device_id}?raw=1").json())
        # a counter that never left 0 (a single-phase meter's export) is no value: docs/counters.md
        shown = {name for name in names if not (name in COUNTERS and raw[name] == 0.0)}
        assert {m["IEC61850"] for m in snapshot if m["DeviceId"] == device_id} == shown
    statuses = [m for m in received if is_status(m)]
    assert all(list(s) == status_keys for s in statuses)
    for msg in received:
        if not is_status(msg):
            check_meter_frame(msg, now_ms)
    live = received[first_status + 1:]
    assert {m["DeviceId"] for m in live if not is_status(m)} == set(NAMES)


def test_ws_readings_format_sends_whole_readings_objects(bus):
    ws = ws_connect(bus, "?format=readings")
    try:
        received = frames(ws, 30)
    finally:
        ws.close()
    assert [r["ModbusDeviceId"] for r in received[:3]] == [1, 2, 26]
    assert is_status(received[3])
    for reading in (r for r in received if not is_status(r)):
        assert list(reading)[:14] == GOSDM_KEYS
        last = bus.get(f"/last/{reading['ModbusDeviceId']}").json()
        assert list(reading) == list(last)
        assert reading["Unix"] <= last["Unix"]
    assert any(not is_status(r) for r in received[4:]), "no live update after the snapshot"


def test_ws_refuses_unknown_formats_and_plain_http(bus):
    ws = ws_connect(bus, "?format=csv")
    opcode, payload = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(payload[:2], "big") == 1008 and b"readings" in payload
    plain = bus.get("/ws")
    assert plain.status == 400 and "websocket" in plain.json()["error"]


def firehose(gw, query: str, timeout: float = 20):
    resp = gw.get(f"/firehose?{query}", timeout=timeout)
    return resp, json.loads(resp.body)


def check_firehose_meter_data(data: dict) -> None:
    assert list(data) == ["DeviceId", "Value", "IEC61850", "Description", "ReadTimestamp", "Meter"]
    assert data["IEC61850"] in NAMES[data["DeviceId"]]
    assert data["Description"] == describe(data["IEC61850"]).description
    assert isinstance(data["Value"], float) and math.isfinite(data["Value"])
    assert data["ReadTimestamp"][:4].isdigit() and "T" in data["ReadTimestamp"]


def test_firehose_meter_and_status_events(bus):
    resp, body = firehose(bus, "timeout=10&category=meterupdate")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert resp.headers["access-control-allow-origin"] == "*"
    assert not resp.body.endswith(b"\n")
    assert body["events"]
    for event in body["events"]:
        assert list(event) == ["timestamp", "category", "data"]
        assert event["category"] == "meterupdate"
        check_firehose_meter_data(event["data"])
    _, plural = firehose(bus, "timeout=10&category=meterupdates")
    assert {e["category"] for e in plural["events"]} == {"meterupdate"}
    _, status = firehose(bus, "timeout=10&category=statusupdate")
    data = status["events"][0]["data"]
    assert isinstance(data, dict) and list(data) == list(bus.get("/status").json())


def test_firehose_all_category_interleaves_both_in_order(bus):
    seen, cursor = [], 0
    end = time.monotonic() + 15
    while {e["category"] for e in seen} != {"meterupdate", "statusupdate"} and time.monotonic() < end:
        _, body = firehose(bus, f"timeout=10&category=all&since_time={cursor}")
        seen += body.get("events", [])
        cursor = seen[-1]["timestamp"] if seen else cursor
    assert {e["category"] for e in seen} == {"meterupdate", "statusupdate"}
    stamps = [e["timestamp"] for e in seen]
    assert stamps == sorted(stamps)


def test_firehose_since_time_replays_everything_after_it(bus):
    _, first = firehose(bus, "timeout=10&category=meterupdate")
    cursor = first["events"][-1]["timestamp"]
    followed = []
    end = time.monotonic() + 2
    while time.monotonic() < end:             # a client that keeps up, without gaps
        _, body = firehose(bus, f"timeout=10&category=meterupdate&since_time={cursor}")
        followed += body["events"]
        cursor = body["events"][-1]["timestamp"]
    start = first["events"][-1]["timestamp"]
    replayed, cursor = [], start
    while len(replayed) < len(followed):      # a client far behind catches up in several polls
        _, replay = firehose(bus, f"timeout=10&category=meterupdate&since_time={cursor}")
        assert all(e["timestamp"] > cursor for e in replay["events"])
        replayed += replay["events"]
        cursor = replay["events"][-1]["timestamp"]
    assert replayed[:len(followed)] == followed
    _, none_newer = firehose(bus, f"timeout=1&category=statusupdate&since_time={10 ** 15}")
    assert list(none_newer) == ["timeout", "timestamp"]


BAD_TIMEOUT = b'{"error": "Invalid timeout arg.  Must be 1-120."}'
BAD_CATEGORY = b'{"error": "Invalid subscription category, must be 1-1024 characters long."}'
BAD_SINCE = b'{"error": "Invalid last_event_time arg."}'


def test_firehose_error_bodies_and_timeout(bus):
    cases = [
        ("category=meterupdate", BAD_TIMEOUT), ("timeout=0&category=meterupdate", BAD_TIMEOUT),
        ("timeout=121&category=meterupdate", BAD_TIMEOUT), ("timeout=abc&category=all", BAD_TIMEOUT),
        ("timeout=1.5&category=all", BAD_TIMEOUT), ("timeout=5", BAD_CATEGORY),
        ("timeout=5&category=", BAD_CATEGORY), (f"timeout=5&category={'x' * 1025}", BAD_CATEGORY),
        ("timeout=5&category=all&since_time=abc", BAD_SINCE),
        ("timeout=5&category=all&since_time=1.5", BAD_SINCE),
    ]
    for query, body in cases:
        resp = bus.get(f"/firehose?{query}")
        assert (resp.status, resp.body) == (400, body), query
        assert resp.headers["content-type"] == "application/json"
    unknown = bus.get("/firehose?timeout=5&category=meter")
    assert unknown.status == 400 and "meterupdate" in unknown.json()["error"]
    started = time.monotonic()
    resp, body = firehose(bus, f"timeout=1&category=meterupdate&since_time={10 ** 15}")
    assert time.monotonic() - started >= 1
    assert resp.status == 200 and list(body) == ["timeout", "timestamp"]
    assert body["timeout"] == "no events before timeout"
    assert abs(body["timestamp"] - time.time() * 1000) < 5000


def collect(ws, arrivals: list) -> None:
    """Read frames until the socket ends, noting (arrival time, meter frame Timestamp)."""
    try:
        while True:
            msg = json.loads(ws.recv())
            if not is_status(msg):
                arrivals.append((time.time(), msg["Timestamp"]))
    except (websocket.WebSocketException, OSError):
        pass


def test_a_stuck_client_is_dropped_while_a_healthy_one_keeps_receiving(bus):
    healthy = ws_connect(bus)
    arrivals: list = []
    reader = gevent.spawn(collect, healthy, arrivals)
    stuck = ws_connect(bus, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    try:
        wait_until(lambda: "rounds of updates behind" in bus.log(), 60, interval=0.2, what="the stuck client dropped")
        dropped_at = time.time()
        wait_until(lambda: arrivals and arrivals[-1][0] > dropped_at + 1, 10, what="frames after the drop")
    finally:
        healthy.close()
        reader.join(timeout=5)
        stuck.close()
    gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:])]
    assert max(gaps) < 3.0, "the healthy client stalled"
    assert bus.proc.poll() is None


def test_two_hundred_concurrent_clients_all_receive_updates(simulator, gateway):
    bus = gateway(simulator(DEVICES).link, DEVICES, "--ws-per-address", "200")   # all from 127.0.0.1
    started_ms = int(time.time() * 1000)
    clients = [ws_connect(bus) for _ in range(200)]

    def first_live_update(ws):
        """Read past the snapshot to the first update read after the test began, then leave."""
        try:
            while True:
                msg = json.loads(ws.recv())
                if not is_status(msg) and msg["Timestamp"] > started_ms:
                    return msg["Timestamp"]
        finally:
            ws.shutdown()

    readers = [gevent.spawn(first_live_update, ws) for ws in clients]
    gevent.joinall(readers, timeout=60)
    assert all(r.successful() for r in readers), [r.exception for r in readers if not r.successful()][:3]
    wait_until(lambda: bus.log().count("disconnected") >= 200, 15, what="200 disconnections logged")
    assert "rounds of updates behind" not in bus.log()
