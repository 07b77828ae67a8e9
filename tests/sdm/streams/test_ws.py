"""The websocket broadcaster, in process: formats, liveness, protection against clients."""

import json
import socket
import time

import pytest
import websocket

from sdm.streams.ws import MESSAGE_TOO_BIG, Broadcaster, WsSettings
from tests.support import wait_until


def connect(live, query: str = "") -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{live.port}/ws{query}", timeout=5)


def closed_with(ws: websocket.WebSocket) -> int:
    """The code of the close frame the server ends with (frames before it skipped)."""
    while True:
        opcode, payload = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(payload[:2], "big")


def test_snapshot_then_live_frames_without_values_the_meter_could_not_give(live):
    live.hub.publish("Instrument1", {"WLocPhsA": 100.5, "WLocPhsB": None, "WLocPhsC": -20.25},
                     timestamp=1_700_000_000.123)
    ws = connect(live)
    snapshot = [json.loads(ws.recv()) for _ in range(3)]
    assert snapshot[:2] == [
        {"DeviceId": 1, "Value": 100.5, "IEC61850": "WLocPhsA", "Description": "L1 Power (W)",
         "Timestamp": 1_700_000_000_123, "Meter": "Instrument1"},
        {"DeviceId": 1, "Value": -20.25, "IEC61850": "WLocPhsC", "Description": "L3 Power (W)",
         "Timestamp": 1_700_000_000_123, "Meter": "Instrument1"},
    ]
    assert "Modbus" in snapshot[2]       # the status; meter 2 has no reading yet
    live.hub.publish("Instrument2", {"Freq": 49.95}, timestamp=1_700_000_001.0)
    assert json.loads(ws.recv()) == {"DeviceId": 2, "Value": 49.95, "IEC61850": "Freq",
                                     "Description": "Frequency of supply voltages", "Timestamp": 1_700_000_001_000,
                                     "Meter": "Instrument2"}
    ws.close()


def test_readings_format_sends_the_rest_object_of_the_meter(live):
    ws = connect(live, "?format=readings")
    assert "Modbus" in json.loads(ws.recv())
    live.hub.publish("Instrument1", {"VolLocPhsC": 231.0})
    assert json.loads(ws.recv()) == live.get("/last/1").json()
    live.hub.publish_status({"Modbus": {}, "ConfiguredMeters": []})
    assert json.loads(ws.recv()) == {"Modbus": {}, "ConfiguredMeters": []}
    ws.close()


@pytest.mark.parametrize("live", [{"ping_interval": 0.1, "idle_timeout": 0.5}], indirect=True)
def test_a_client_that_answers_pings_stays_and_a_silent_one_is_dropped(live, caplog):
    answering = connect(live)
    silent = socket.create_connection(("127.0.0.1", live.port))
    silent.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    end = time.monotonic() + 1.5
    while time.monotonic() < end:          # websocket-client answers each ping it reads
        opcode, _ = answering.recv_data(control_frame=True)
    wait_until(lambda: "silent for 0.5 s" in caplog.text, 5, what="the silent client dropped")
    assert live.streams.broadcaster.count() == 1
    live.hub.publish("Instrument1", {"Freq": 50.0})
    while opcode != websocket.ABNF.OPCODE_TEXT:
        opcode, payload = answering.recv_data(control_frame=True)
    assert json.loads(payload)["IEC61850"] == "Freq"
    answering.close()
    silent.close()


def test_client_pings_get_pongs_and_oversized_frames_end_the_connection(live, caplog):
    ws = connect(live)
    ws.recv()                              # the snapshot's status frame
    ws.ping("are you there")
    assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"are you there")
    ws.send("x" * 10_000)
    assert closed_with(ws) == MESSAGE_TOO_BIG
    wait_until(lambda: "sent a frame of 10000 bytes" in caplog.text, 5, what="the abusive client dropped")


def test_the_hub_subscriber_never_blocks_even_when_the_broadcaster_is_behind(live, caplog):
    broadcaster = Broadcaster(live.hub, WsSettings(inbox=3))
    broadcaster.greenlet.kill()            # nobody drains the inbox
    for n in range(10):
        live.hub.publish("Instrument1", {"Freq": 50.0 + n})
    assert broadcaster.inbox.qsize() == 3
    assert caplog.text.count("broadcaster 3 events behind") == 1
    broadcaster.stop()


def test_readings_format_keeps_a_status_whose_place_equals_a_meter_id(live):
    """A round [meter 1, meter 1, status, meter 2]: the status sits at place 2 and meter 2
    updates later in the round; both frames must go out, once each."""
    from sdm.hub import MeterUpdate, StatusUpdate
    broadcaster = Broadcaster(live.hub, WsSettings())
    try:
        events = [MeterUpdate("Instrument1", 1, {}, 1000.0), MeterUpdate("Instrument1", 1, {}, 1000.0),
                  StatusUpdate({"Modbus": {}}, 1000.0), MeterUpdate("Instrument2", 2, {}, 1000.0)]
        data = broadcaster.encode(events, "readings")
    finally:
        broadcaster.stop()
    assert data.count(b'{"Modbus":{}}') == 1
    assert data.count(b'"ModbusDeviceId":1') == 1
    assert data.count(b'"ModbusDeviceId":2') == 1
