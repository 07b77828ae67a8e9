"""Client caps and a clean stop: clients over the cap get a clear refusal, the server stays quick."""

import json
import struct
import time

import gevent
import pytest
import websocket

from tests.support import wait_until


def connect(live) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{live.port}/ws", timeout=5)


def close_frame(ws):
    """The first close frame the server sends: (code, reason)."""
    while True:
        opcode, payload = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def quick_status(live) -> float:
    started = time.monotonic()
    assert live.get("/status", timeout=2).status == 200
    return time.monotonic() - started


@pytest.mark.parametrize("live", [{"max_clients": 2}], indirect=True)
def test_websocket_client_over_the_cap_is_refused_with_1013(live):
    first, second = connect(live), connect(live)
    wait_until(lambda: live.streams.broadcaster.count() == 2, 5, what="two clients")
    third = connect(live)
    code, reason = close_frame(third)
    assert code == 1013 and "too many clients (at most 2)" in reason
    assert live.streams.broadcaster.count() == 2
    quick_status(live)
    first.close()
    wait_until(lambda: live.streams.broadcaster.count() == 1, 5, what="a place freed")
    fourth = connect(live)
    assert "Modbus" in json.loads(fourth.recv())           # served: the snapshot's status frame
    for ws in (second, third, fourth):
        ws.close()


def test_long_poll_over_the_cap_gets_a_503_at_once(live):
    live.streams.firehose.max_waiting = 2
    waiting = [gevent.spawn(live.get, "/firehose?timeout=30&category=statusupdate") for _ in range(2)]
    wait_until(lambda: live.streams.firehose.waiting == 2, 5, what="two waiting polls")
    started = time.monotonic()
    refused = live.get("/firehose?timeout=30&category=statusupdate")
    assert time.monotonic() - started < 1.0
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    assert "too many long-poll clients (at most 2)" in refused.json()["error"]
    quick_status(live)
    live.hub.publish_status({"Modbus": {}})
    assert all(w.get(timeout=5).json()["events"] for w in waiting)
    assert live.streams.firehose.waiting == 0
    assert live.get("/firehose?timeout=1&category=statusupdate&since_time=0").status == 200


def test_one_address_holds_at_most_its_share_of_long_polls(live):
    live.streams.firehose.addresses.limit = 2
    waiting = [gevent.spawn(live.get, "/firehose?timeout=30&category=statusupdate") for _ in range(2)]
    wait_until(lambda: live.streams.firehose.waiting == 2, 5, what="two waiting polls")
    spoofed = live.get("/firehose?timeout=30&category=statusupdate", headers={"X-Forwarded-For": "10.9.8.7"})
    assert spoofed.status == 503 and "from your address (at most 2)" in spoofed.json()["error"]
    live.hub.publish_status({"Modbus": {}})
    assert all(w.get(timeout=5).status == 200 for w in waiting)
    assert live.streams.firehose.addresses.held("127.0.0.1") == 0     # every slot given back


def test_stop_closes_websockets_with_1001_and_answers_waiting_polls(live):
    ws = connect(live)
    waiting = gevent.spawn(live.get, "/firehose?timeout=30&category=meterupdate")
    wait_until(lambda: live.streams.firehose.waiting == 1 and live.streams.broadcaster.count() == 1, 5,
               what="one client of each")
    started = time.monotonic()
    live.streams.stop()
    assert close_frame(ws) == (1001, "server stopping")
    assert "timeout" in waiting.get(timeout=2).json()
    assert time.monotonic() - started < 1.0
    ws.close()
