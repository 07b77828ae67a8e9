"""The TCP transport against scripted servers on 127.0.0.1: ports, connect, read, clear, failures."""

import re
import socket
import time

import pytest

from sdm.transport import TransportError
from sdm.transport.tcp import TcpTransport, parse_address, parse_port
from tests.tcp_support import FakeGateway, hold_open, reset


@pytest.mark.parametrize("port, parsed", [
    ("tcp://192.168.1.60", ("tcp", "192.168.1.60", 502)),
    ("tcp://gw.local:1502", ("tcp", "gw.local", 1502)),
    ("rtu+tcp://192.168.1.50:8899", ("rtu+tcp", "192.168.1.50", 8899)),
    ("tcp://[fd00::5]", ("tcp", "fd00::5", 502)),
    ("rtu+tcp://[::1]:4196", ("rtu+tcp", "::1", 4196)),
])
def test_ports_parse(port, parsed):
    assert parse_port(port) == parsed


@pytest.mark.parametrize("port, message", [
    ("rtu+tcp://192.168.1.50", "a transparent gateway has no standard port"),
    ("tcp://::1:502", "IPv6 address in brackets"),
    ("tcp://[::1", "must be written [ADDRESS]"),
    ("tcp://[::1]502", "expected :PORT"),
    ("tcp://:502", "no host given"),
    ("tcp://host:0", "1-65535"),
    ("tcp://host:65536", "1-65535"),
    ("tcp://host:http", "1-65535"),
    ("tcp://host:502/x", "only HOST:PORT"),
    ("udp://host:502", "neither rtu+tcp"),
    ("/dev/ttyUSB0", "neither rtu+tcp"),
])
def test_bad_ports_get_a_clear_error(port, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parse_port(port)
    assert repr(port) in str(caught.value)


def test_a_listener_may_ask_for_any_free_port():
    assert parse_address("127.0.0.1:0", allow_zero=True) == ("127.0.0.1", 0)
    with pytest.raises(ValueError):
        parse_address("127.0.0.1:0")


@pytest.fixture
def server():
    servers = []

    def start(script):
        fake = FakeGateway(script)
        servers.append(fake)
        return fake

    yield start
    for fake in servers:
        fake.close()


@pytest.fixture
def transport():
    made = []

    def connect(url):
        made.append(TcpTransport(url, connect_timeout=2.0))
        made[-1].open()
        return made[-1]

    yield connect
    for t in made:
        t.close()


def test_refused_connection_is_a_transport_error():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()                       # nobody listens there now
    t = TcpTransport(f"tcp://127.0.0.1:{port}")
    with pytest.raises(TransportError, match="cannot connect to tcp://127.0.0.1:.*refused"):
        t.open()
    assert not t.is_open


def test_nodelay_is_set_and_bytes_flow_both_ways(server, transport):
    def echo_twice(conn, _):
        conn.sendall(fake.read(conn, 3) * 2)
        hold_open(conn)

    fake = server(echo_twice)
    t = transport(fake.url("tcp"))
    assert t._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    t.write(b"abc")
    assert t.read(6, time.monotonic() + 2) == b"abcabc"
    assert t.received == b"abcabc"     # kept for a look at the gateway's mode
    t.write(b"xyz")
    assert t.received == b""            # a new request: a new reply


def test_read_gives_what_came_by_the_deadline(server, transport):
    def half(conn, _):
        fake.read(conn, 1)
        conn.sendall(b"\x01\x04")
        hold_open(conn)

    fake = server(half)
    t = transport(fake.url("rtu+tcp"))
    t.write(b"?")
    started = time.monotonic()
    assert t.read(9, started + 0.3) == b"\x01\x04"
    assert 0.25 <= time.monotonic() - started < 2.0


def test_clear_input_drops_buffered_bytes_without_waiting(server, transport):
    def chatter(conn, _):
        conn.sendall(b"late reply")
        fake.read(conn, 1)
        conn.sendall(b"ok")
        hold_open(conn)

    fake = server(chatter)
    t = transport(fake.url("tcp"))
    time.sleep(0.2)                     # the late bytes are in
    started = time.monotonic()
    t.clear_input()
    assert time.monotonic() - started < 0.1
    t.write(b"?")
    assert t.read(2, time.monotonic() + 2) == b"ok"


@pytest.mark.parametrize("end", [lambda conn: conn.close(), reset], ids=["closed", "reset"])
def test_a_connection_that_ends_mid_reply_is_a_transport_error(server, transport, end):
    def drop(conn, _):
        fake.read(conn, 1)
        conn.sendall(b"\x01\x04\x04")
        time.sleep(0.05)
        end(conn)

    fake = server(drop)
    t = transport(fake.url("tcp"))
    t.write(b"?")
    with pytest.raises(TransportError, match="closed by the gateway|read failed"):
        t.read(9, time.monotonic() + 2)


def test_clear_input_notices_a_closed_connection(server, transport):
    fake = server(lambda conn, _: conn.close())
    t = transport(fake.url("tcp"))
    time.sleep(0.1)
    with pytest.raises(TransportError, match="closed by the gateway"):
        t.clear_input()


def test_settle_discards_until_quiet(server, transport):
    def trickle(conn, _):
        for _ in range(5):
            conn.sendall(b"x")
            time.sleep(0.01)
        hold_open(conn)

    fake = server(trickle)
    t = transport(fake.url("tcp"))
    t.settle(quiet=0.1, limit=2.0)
    assert t.read(1, time.monotonic() + 0.1) == b""


def test_a_closed_transport_refuses_io():
    t = TcpTransport("tcp://127.0.0.1:502")
    with pytest.raises(TransportError, match="not connected"):
        t.write(b"x")
    with pytest.raises(TransportError, match="not connected"):
        t.read(1, time.monotonic())


def test_bad_connect_timeout_is_refused():
    with pytest.raises(ValueError, match="connect timeout"):
        TcpTransport("tcp://127.0.0.1", connect_timeout=0)


def test_a_gateway_that_does_not_accept_times_out_on_connect():
    """A listener with a full backlog drops further SYNs: connect waits for its timeout only."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    first = TcpTransport(f"tcp://127.0.0.1:{listener.getsockname()[1]}", connect_timeout=0.3)
    second = TcpTransport(first.port, connect_timeout=0.3)
    try:
        first.open()                     # fills the backlog (nobody accepts)
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            second.open()
        assert 0.25 <= time.monotonic() - started < 2.0
        assert not second.is_open
    finally:
        first.close()
        listener.close()
