"""The parts of gevent-websocket that sdm.compat.geventwebsocket relies on.

A WebSocket on one end of a socket pair, the test on the other: each test fails when a
gevent-websocket release changes the private behaviour a helper builds on.
"""

import logging
import socket
from types import SimpleNamespace

import pytest
from gevent import socket as gsocket
from geventwebsocket.websocket import Stream, WebSocket
from websocket import ABNF

from sdm.compat.geventwebsocket import (
    OPCODE_PING,
    OPCODE_TEXT,
    ClientFrame,
    FrameTooLong,
    ProtocolViolation,
    connection_socket,
    frame,
    mark_closed,
    raw_writer,
    read_frame,
)


@pytest.fixture
def pair():
    """(the server's WebSocket, the client's plain socket)."""
    ours, theirs = gsocket.socketpair()
    theirs.settimeout(2)
    ours.settimeout(2)
    handler = SimpleNamespace(socket=ours, rfile=ours.makefile("rb"), server=SimpleNamespace(application=None),
                              logger=logging.getLogger("test"))
    yield WebSocket({}, Stream(handler), handler), theirs
    ours.close()
    theirs.close()


def received(sock) -> bytes:
    sock.settimeout(0.2)
    try:
        return sock.recv(65536)
    except socket.timeout:
        return b""


def client_frame(payload: bytes, opcode: int = ABNF.OPCODE_TEXT) -> bytes:
    """A masked frame, as a browser sends it (encoded by websocket-client, not by us)."""
    return ABNF.create_frame(payload, opcode).format()


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_our_frames_are_the_bytes_the_library_sends(pair, size):
    ws, client = pair
    payload = b"x" * size
    ws.send_frame(payload.decode(), OPCODE_TEXT)      # the library's text frames take str
    data = b""
    while len(data) < len(frame(payload)):
        data += client.recv(70000)
    assert data == frame(payload)


def test_the_raw_writer_and_the_socket_are_the_connections(pair):
    ws, client = pair
    raw_writer(ws)(b"raw bytes")
    assert received(client) == b"raw bytes"
    assert connection_socket(ws) is ws.handler.socket


def test_client_frames_are_read_and_unmasked(pair):
    ws, client = pair
    client.sendall(client_frame(b"hello") + client_frame(b"are you there", ABNF.OPCODE_PING))
    assert read_frame(ws, 4096) == ClientFrame(OPCODE_TEXT, b"hello", fin=True, rsv=0, masked=True)
    assert read_frame(ws, 4096) == ClientFrame(OPCODE_PING, b"are you there", fin=True, rsv=0, masked=True)


def test_an_oversized_frame_is_refused_before_its_payload_is_read(pair):
    ws, client = pair
    client.sendall(client_frame(b"y" * 5000) + client_frame(b"next"))
    with pytest.raises(FrameTooLong) as refused:
        read_frame(ws, 4096)
    assert refused.value.length == 5000
    ws.raw_read(5000)                     # the payload was left where it was: skip it
    assert read_frame(ws, 4096)[:2] == (OPCODE_TEXT, b"next")


def test_a_vanished_client_is_an_oserror(pair):
    ws, client = pair
    client.close()
    with pytest.raises(OSError):
        read_frame(ws, 4096)


def test_a_connection_marked_closed_gets_nothing_more_from_the_library(pair):
    ws, client = pair
    mark_closed(ws)
    ws.close(1000, b"")          # what the library's handler does when the application returns
    assert received(client) == b""


def raw_client_frame(payload: bytes, opcode: int = ABNF.OPCODE_TEXT, fin: int = 1, rsv: int = 0,
                     mask: bool = True) -> bytes:
    """A short frame with any bits, written by hand (websocket-client refuses to send bad ones)."""
    key = b"\x01\x02\x03\x04" if mask else b""
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if mask else payload
    return bytes([fin << 7 | rsv << 4 | opcode, (0x80 if mask else 0) | len(payload)]) + key + body


@pytest.mark.parametrize("kwargs,expected", [
    ({"mask": False}, {"masked": False}),
    ({"rsv": 0b100}, {"rsv": 0b100}),
    ({"rsv": 0b011}, {"rsv": 0b011}),
    ({"fin": 0}, {"fin": False}),
    ({"opcode": 0x3}, {"opcode": 0x3}),
    ({"opcode": ABNF.OPCODE_CONT}, {"opcode": 0}),
])
def test_the_header_bits_the_library_leaves_unchecked_reach_us(pair, kwargs, expected):
    ws, client = pair
    client.sendall(raw_client_frame(b"abc", **kwargs))
    got = read_frame(ws, 4096)
    assert got.payload == b"abc"
    assert {key: getattr(got, key) for key in expected} == expected


@pytest.mark.parametrize("raw", [
    raw_client_frame(b"", ABNF.OPCODE_PING, fin=0),              # a fragmented control frame
    bytes([0x89, 0x80 | 126, 0, 200]) + b"\0" * 4 + b"x" * 200,   # a ping of 200 bytes
])
def test_control_frames_the_library_refuses_are_a_protocol_violation(pair, raw):
    ws, client = pair
    client.sendall(raw)
    with pytest.raises(ProtocolViolation):
        read_frame(ws, 4096)
