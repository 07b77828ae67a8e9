"""The Modbus TCP server in-process: any byte stream leaves it answering, and clients are capped."""

import socket
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from sdm.cache import RegisterCache
from sdm.config import DENY
from sdm.hub import Hub
from sdm.metrics import registry_for
from sdm.serve import MbapServer, Serving
from sdm.slave import Responder, ServeStats
from tests.fakes import meter_configs

METER = meter_configs({1: "sdm630"})[0]
READ = struct.pack(">HHHB", 77, 0, 6, 1) + struct.pack(">BHH", 4, 0, 2)


@pytest.fixture(scope="module")
def server():
    cache = RegisterCache()
    responder = Responder({1: METER}, cache, 60.0, DENY, ServeStats("tcp test"))
    cache.store(METER.bus, 1, 4, 0, [0x4366, 0x8000] * 20, responder.clock())
    served = MbapServer(("127.0.0.1", 0), responder, max_connections=4, idle_timeout=1.0, frame_timeout=0.5)
    running = Serving([served]).start()            # a native thread, as in the gateway
    yield served
    running.stop()


def ask(port: int, data: bytes, wait: float = 0.3) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        received = b""
        try:
            while True:
                chunk = sock.recv(512)
                if not chunk:
                    break
                received += chunk
        except (socket.timeout, ConnectionResetError):   # no answer, or closed with our bytes unread
            pass
        return received


def test_a_good_request_gets_the_cached_registers(server):
    assert ask(server.address[1], READ) == struct.pack(">HHHBBB2H", 77, 0, 7, 1, 4, 4, 0x4366, 0x8000)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_leave_the_server_answering(server, noise):
    ask(server.address[1], noise, wait=0.05)
    assert ask(server.address[1], READ).startswith(struct.pack(">HHHB", 77, 0, 7, 1))


def test_clients_over_the_cap_are_closed_and_trickling_ones_dropped(server):
    port = server.address[1]
    hogs = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.3)
        assert ask(port, READ) == b""                          # a fifth client: closed at once
        hogs[0].sendall(READ[:3])                              # a frame begun, never finished
        time.sleep(1.5)
        assert server.stats.connections == 0                   # trickling and idle ones dropped
    finally:
        for hog in hogs:
            hog.close()
    assert ask(port, READ).startswith(struct.pack(">HHHB", 77, 0, 7, 1))


def test_metrics_count_requests_and_refusals_by_reason(server):
    ask(server.address[1], struct.pack(">HHHB", 1, 0, 6, 1) + struct.pack(">BHH", 6, 0, 1))
    hub = Hub([METER])
    hub.serving = [server.stats]
    text = generate_latest(registry_for(hub)).decode()
    assert 'sdm_serve_refusals_total{reason="write_denied",server="tcp test"} 1.0' in text
    assert 'sdm_serve_value_age_seconds{server="tcp test",stat="max"}' in text
