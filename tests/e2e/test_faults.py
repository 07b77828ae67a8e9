"""A bad bus end to end: the simulator misbehaves on purpose, the gateway never lies and never stops."""

import json
import re
import signal
import socket
import struct
import time
from collections import Counter
from typing import Dict, List, Tuple

import gevent
import pytest
import websocket

from sdm.framing.rtu import ERROR_KINDS
from simulator.faults import COLLISION, FAULTS
from tests.e2e.test_rest import ALL_TYPES
from tests.support import ServedValues, expected_errors, http_request, reading_values, wait_until

TYPES = [item.split(":")[0] for item in ALL_TYPES.split(",")]
IDS = [int(item.split(":")[1]) for item in ALL_TYPES.split(",")]
# An unpaced bus at full speed: no pauses, and 19200 baud for a short inter-frame silence.
FULL_SPEED = ["-c", "3", *(arg for name in TYPES for arg in ("--pause", f"{name}=0"))]
REQUESTS = 2500


def served_records(path):
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.endswith("\n")]


class PublishedBlocks:
    """Every block the gateway publishes, as /ws clients see it: gosdm630 frames grouped by meter
    and read time (one read of one block shares a timestamp)."""

    def __init__(self, port: int):
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
        self.blocks: Dict[Tuple[int, int], Dict[str, float]] = {}
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        in_snapshot = True      # a new client first gets whole readings, then the status
        while True:
            message = json.loads(self.ws.recv())
            if "Modbus" in message:
                in_snapshot = False
            elif not in_snapshot:
                key = (message["DeviceId"], message["Timestamp"])
                self.blocks.setdefault(key, {})[message["IEC61850"]] = message["Value"]

    def taken(self) -> List[Tuple[int, Dict[str, float]]]:
        """(meter id, values) of the blocks seen so far; stops reading."""
        self.reader.kill()
        self.ws.close()
        return [(device_id, values) for (device_id, _), values in self.blocks.items()]


def by_kind(counts):
    return {kind: counts.get(kind, 0) for kind in ERROR_KINDS}


def meter_status(gw, device_id):
    return next(m for m in gw.get("/status").json()["ConfiguredMeters"] if m["Id"] == device_id)


def test_five_percent_faults_on_every_meter_type(simulator, gateway, tmp_path):
    served_path = tmp_path / "served.jsonl"
    sim = simulator(ALL_TYPES, "--faults", "all=0.05", "--served-log", str(served_path))
    gw = gateway(sim.link, ALL_TYPES, "--timeout", "0.2", *FULL_SPEED)
    published = PublishedBlocks(gw.port)
    answers = Counter()
    readings = []

    def poll_last_until_enough_requests():
        for device_id in IDS:
            resp = gw.get(f"/last/{device_id}")
            answers[resp.status] += 1
            if resp.status == 200:
                readings.append(resp.json())
            else:   # a meter that failed max-failures times in a row: honest about it
                assert resp.status == 503 and "age" in resp.json(), resp.body
        return gw.get("/status").json()["Modbus"]["TotalModbusRequests"] >= REQUESTS

    wait_until(poll_last_until_enough_requests, 150, interval=0.1, what=f"{REQUESTS} requests")
    status = gw.get("/status").json()
    total = status["Modbus"]["TotalModbusRequests"]
    blocks = published.taken()   # taken before the served log is read, which is always ahead
    records = served_records(served_path)
    # The simulator logs a request before it answers; the gateway counts it after: the first
    # `total` requests of the log are exactly those in the snapshot.
    requests = [r for r in records if "outcome" in r][:total]
    assert len(requests) == total

    outcomes = Counter(r["outcome"] for r in requests)
    assert set(outcomes) >= set(FAULTS) | {COLLISION}, outcomes
    assert status["Modbus"]["ErrorsByKind"] == by_kind(expected_errors(requests))
    assert status["Modbus"]["TotalModbusErrors"] == sum(expected_errors(requests).values())
    for meter in status["ConfiguredMeters"]:
        mine = [r for r in requests if r["slave"] == meter["Id"]]
        assert meter["Requests"] == len(mine)
        assert meter["ErrorsByKind"] == by_kind(expected_errors(mine)), meter["Id"]

    served = ServedValues(records)
    assert len(blocks) >= outcomes["ok"] * 0.9    # all but those read before the client connected
    for device_id, values in blocks:
        assert served.served(device_id, values), (device_id, values)
    assert answers[200] > 0 and set(answers) <= {200, 503}
    for reading in readings:
        for name, value in reading_values(reading).items():
            assert served.served(reading["ModbusDeviceId"], {name: value}), (reading["ModbusDeviceId"], name)


def test_offline_meter_turns_unavailable_then_available_within_a_reprobe(simulator, gateway, tmp_path):
    served_path = tmp_path / "served.jsonl"
    sim = simulator("sdm630:1,sdm120:2", "--offline", "2@6-9", "--served-log", str(served_path))
    gw = gateway(sim.link, "sdm630:1,sdm120:2", "--timeout", "0.1", "--max-failures", "3",
                 "--reprobe-max", "1")
    started = served_records(served_path)[0]["t"]
    assert meter_status(gw, 2)["Errors"] == 0

    went = wait_until(lambda: (m := meter_status(gw, 2))["Status"] == "unavailable" and m, 15, interval=0.02,
                      what="meter 2 unavailable")
    assert went["ErrorsByKind"]["timeout"] == went["Errors"] == 3      # exactly --max-failures
    resp = gw.get("/last/2")
    assert resp.status == 503
    assert resp.json()["error"] == "Device 2 is not available." and resp.json()["age"] > 0
    assert [r["ModbusDeviceId"] for r in gw.get("/last").json()] == [1]
    readings_of_1 = meter_status(gw, 1)["CompleteReadings"]
    wait_until(lambda: meter_status(gw, 1)["CompleteReadings"] > readings_of_1 + 2, 5,
               what="meter 1 read on while meter 2 is away")

    wait_until(lambda: meter_status(gw, 2)["Status"] == "available", 15, interval=0.02, what="meter 2 back")
    back_after = time.time() - (started + 9)
    assert back_after < 1.0 + 0.8, f"back {back_after:.2f} s after it answered again (re-probe period 1 s)"
    assert gw.get("/last/2").status == 200


class Streams:
    """A websocket client and a firehose follower, reading in the background."""

    def __init__(self, port):
        self.port = port
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=30)
        self.ws_messages, self.firehose_events, self.firehose_answers = [], [], Counter()
        self.running = True
        self.readers = [gevent.spawn(self._read_ws), gevent.spawn(self._follow_firehose)]

    def _read_ws(self):
        try:
            while self.running:
                message = self.ws.recv()
                if message:            # empty: the close handshake of stop()
                    self.ws_messages.append(json.loads(message))
        except (OSError, websocket.WebSocketException) as err:
            if self.running:
                self.ws_messages.append({"ended": repr(err)})

    def _follow_firehose(self):
        since = int(time.time() * 1000)
        while self.running:
            resp = http_request(self.port, f"/firehose?timeout=2&category=all&since_time={since}")
            self.firehose_answers[resp.status] += 1
            for event in resp.json().get("events", []):
                self.firehose_events.append(event)
                since = max(since, event["timestamp"])

    def stop(self):
        self.running = False
        self.ws.close()
        gevent.joinall(self.readers, timeout=5)
        assert all(reader.successful() for reader in self.readers), [r.exception for r in self.readers]
        assert not [m for m in self.ws_messages if "ended" in m], "the websocket ended while in use"

    def meter_update_after(self, seconds: float) -> bool:
        """Both streams carried a meter update read after ``seconds`` (epoch)."""
        return (any(m.get("Timestamp", 0) > seconds * 1000 for m in self.ws_messages if "DeviceId" in m)
                and any(e["category"] == "meterupdate" and e["timestamp"] > seconds * 1000
                        for e in self.firehose_events))

    def saw_bus_down(self) -> bool:
        """Both streams carried a status with the bus disconnected."""
        return (any(m["Bus"]["Connected"] is False for m in self.ws_messages if "Modbus" in m)
                and any(e["data"]["Bus"]["Connected"] is False for e in self.firehose_events
                        if e["category"] == "statusupdate"))


def test_adapter_unplugged_and_plugged_back_with_streams_open(simulator, gateway, tmp_path):
    served_path = tmp_path / "served.jsonl"
    sim = simulator("sdm630:1,janitza:26", "--unplug", "5-7", "--served-log", str(served_path))
    gw = gateway(sim.link, "sdm630:1,janitza:26")
    streams = Streams(gw.port)
    try:
        wait_until(lambda: gw.get("/status").json()["Bus"]["Connected"] is False, 10, what="the bus to drop")
        assert gw.get("/last/1").status == 503
        assert gw.get("/last").json() == []
        readings = {m["Id"]: m["CompleteReadings"] for m in gw.get("/status").json()["ConfiguredMeters"]}

        def resumed():
            status = gw.get("/status").json()
            return status["Bus"]["Connected"] and all(
                m["Status"] == "available" and m["CompleteReadings"] > readings[m["Id"]]
                for m in status["ConfiguredMeters"]) and status
        status = wait_until(resumed, 15, what="polling to resume")
        assert status["Bus"]["Reconnects"] == 1
        back = time.time()
        wait_until(lambda: streams.meter_update_after(back), 10, what="fresh updates on both streams")
        assert streams.saw_bus_down()
        assert set(streams.firehose_answers) == {200}
    finally:
        streams.stop()
    events = [r for r in served_records(served_path) if r.get("event") in ("unplug", "replug")]
    assert [e["event"] for e in events] == ["unplug", "replug"]
    assert events[0]["path"] != events[1]["path"]       # a new device path behind the same link
    log = gw.log()
    assert len(re.findall(r" ERROR ", log)) == 1 and "adapter lost" in log
    assert "Traceback" not in log


def open_idle_connections(port):
    """A keep-alive connection after one answer, and one stuck halfway through its request."""
    idle = socket.create_connection(("127.0.0.1", port))
    idle.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200")
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /last/1 HTTP/1.1\r\nHost: x\r\n")
    return [idle, half]


def close_code(ws):
    while True:
        opcode, payload = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return struct.unpack("!H", payload[:2])[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_clients_connected_exits_0_within_2s(simulator, gateway, signum):
    sim = simulator("sdm630:1")
    gw = gateway(sim.link, "sdm630:1")
    sockets = open_idle_connections(gw.port)
    sockets_ws = [websocket.create_connection(f"ws://127.0.0.1:{gw.port}/ws", timeout=5) for _ in range(3)]
    future = int(time.time() * 1000) + 3_600_000        # a cursor no event passes: they wait
    polls = [gevent.spawn(http_request, gw.port, f"/firehose?timeout=60&category={category}&since_time={future}")
             for category in ("all", "meterupdate")]
    gevent.sleep(0.5)
    assert not any(poll.ready() for poll in polls)
    sent = time.monotonic()
    gw.signal(signum)
    code = gw.proc.wait(10)
    took = time.monotonic() - sent
    assert code == 0
    assert took < 2.0, f"exit took {took:.2f} s"
    assert [close_code(ws) for ws in sockets_ws] == [1001] * 3     # told, not cut
    assert [poll.get(timeout=5).json()["timeout"] for poll in polls] == ["no events before timeout"] * 2
    for client in sockets + sockets_ws:
        client.close()
    assert "Traceback" not in gw.log()


def test_sigterm_while_waiting_for_the_adapter_exits_at_once(tmp_path, gateway):
    gw = gateway(tmp_path / "ttyUSB-gone", "sdm:1", wait_values=False)
    time.sleep(2)                                   # back-off sleeps grow: 0.5, 1, 2 s
    sent = time.monotonic()
    gw.signal(signal.SIGTERM)
    assert gw.proc.wait(10) == 0
    assert time.monotonic() - sent < 2.0
