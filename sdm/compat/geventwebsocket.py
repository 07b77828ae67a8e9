"""Lower-level use of gevent-websocket (written for and tested with gevent-websocket 0.10.1).

The library's public ``WebSocket`` API (``receive``, ``send``, ``close``) reads and writes one
message at a time in the connection's greenlet. /ws needs more, so it goes underneath:

- frames are encoded once (``Header.encode_header``) and the same bytes go to every client, written
  straight to the connection's stream (``ws.stream.write``) by each client's own writer greenlet,
  where ``send`` would encode per client;
- the client's frames are read one header at a time (``Header.decode_header``, ``ws.raw_read``), so an
  oversized frame is refused before its payload is read (``receive`` reads up to the library's limit
  first), pings are answered through our own bounded queue, and the header's bits the library
  does not check (the mask bit, RSV bits, the opcode) reach /ws, which closes the connection with
  RFC 6455's code for the violation (``receive`` accepts unmasked frames and ignores RSV bits);
- a connection that /ws ended itself is marked closed (``ws.closed``), since the library's ``close``
  would write a close frame of its own: on a refusal it would drop our close code (the library
  writes 1000), and after a client vanished it would write to a dead socket;
- the connection's socket (``ws.handler.socket``) gets a send buffer and a timeout of our own.
"""

from __future__ import annotations

import socket
from typing import Callable, NamedTuple

from geventwebsocket.exceptions import ProtocolError
from geventwebsocket.websocket import Header, WebSocket

OPCODE_CONTINUATION = WebSocket.OPCODE_CONTINUATION
OPCODE_TEXT = WebSocket.OPCODE_TEXT
OPCODE_BINARY = WebSocket.OPCODE_BINARY
OPCODE_CLOSE = WebSocket.OPCODE_CLOSE
OPCODE_PING = WebSocket.OPCODE_PING
OPCODE_PONG = WebSocket.OPCODE_PONG


class FrameTooLong(Exception):
    """The client announced a frame longer than we accept (its payload is left unread)."""

    def __init__(self, length: int):
        super().__init__(f"a frame of {length} bytes")
        self.length = length


class ProtocolViolation(Exception):
    """The library found the client's frame header broken (a fragmented or long control frame)."""


class ClientFrame(NamedTuple):
    """A frame from the client, its payload unmasked."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0            # the three RSV bits, RSV1 highest (no extension is negotiated: must be 0)
    masked: bool = True     # clients must mask every frame (RFC 6455 5.1)


def frame(payload: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """One complete, unmasked (server to client) websocket frame."""
    return bytes(Header.encode_header(True, opcode, b"", len(payload), 0)) + payload


def raw_writer(ws: WebSocket) -> Callable[[bytes], None]:
    """A function writing bytes (complete frames) straight to the connection."""
    return ws.stream.write


def connection_socket(ws: WebSocket) -> socket.socket:
    """The TCP socket under the websocket."""
    return ws.handler.socket


def read_frame(ws: WebSocket, max_length: int) -> ClientFrame:
    """The client's next frame, unmasked.

    Raises FrameTooLong before reading a payload over ``max_length``, ProtocolViolation for a
    header the library refuses, and OSError (the library's WebSocketError) when the connection ends.
    """
    try:
        header = Header.decode_header(ws.stream)
    except ProtocolError as err:
        raise ProtocolViolation(str(err)) from None
    if header.length > max_length:
        raise FrameTooLong(header.length)
    payload = ws.raw_read(header.length) if header.length else b""
    if header.mask:
        payload = header.unmask_payload(payload)
    return ClientFrame(header.opcode, bytes(payload), bool(header.fin), header.flags >> 4, bool(header.mask))


def mark_closed(ws: WebSocket) -> None:
    """Tell the library the connection is finished, so that it writes nothing more on it."""
    ws.closed = True
