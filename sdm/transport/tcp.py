"""A TCP socket to an Ethernet/Wi-Fi RS485 gateway, read and written by us.

Two kinds of gateway sit at the other end (shared/reference/ecosystem.md 4.1):
a transparent one (``rtu+tcp://host:port``) passes raw RTU frames to its
serial line, a Modbus TCP one (``tcp://host[:502]``) takes MBAP frames and
speaks RTU on its side.  This module only moves bytes; the framing above it
(sdm.framing.rtu or sdm.framing.mbap) decides what they mean.

Plain ``socket`` and ``select``: in the gateway each bus runs in a thread of
its own, so a wait here blocks only that bus.  ``char_time`` is the serial
line behind the gateway (given by the caller from the bus's baud and parity),
which is what a reply's length costs; the socket itself adds a round trip.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Optional, Tuple

from . import COMSETS, TransportError, drain

DEFAULT_MODBUS_TCP_PORT = 502
KINDS = {"rtu+tcp": "rtu+tcp://", "tcp": "tcp://"}
DEFAULT_CHAR_TIME = COMSETS[2].char_time       # 9600 8N1
DEFAULT_CONNECT_TIMEOUT = 3.0
# An estimate, not a measurement: a LAN round trip plus a gateway's forwarding,
# which a USR-DR302 specifies as under 10 ms per hop (shared/reference/field.md).
TCP_ROUND_TRIP = 0.010
RECEIVED_KEPT = 512            # bytes of the latest reply kept for a look at the gateway's mode


def is_tcp_port(port: str) -> bool:
    """True for ``rtu+tcp://...`` and ``tcp://...``; a serial path otherwise."""
    return port.startswith(tuple(KINDS.values()))


def parse_port(port: str) -> Tuple[str, str, int]:
    """``tcp://host[:port]`` or ``rtu+tcp://host:port`` -> (kind, host, port).

    ``tcp://`` defaults to port 502; a transparent gateway has no standard
    port (4196, 8899, 23 and 26 are all common), so ``rtu+tcp://`` needs one.
    An IPv6 address goes in brackets: ``tcp://[fd00::5]:502``.
    """
    kind = next((k for k, prefix in KINDS.items() if port.startswith(prefix)), None)
    if kind is None:
        raise ValueError(f"port {port!r} is neither rtu+tcp://HOST:PORT nor tcp://HOST[:PORT]")
    rest = port[len(KINDS[kind]):]
    if any(c in rest for c in "/?#@"):
        raise ValueError(f"port {port!r}: only HOST:PORT may follow {KINDS[kind]}")
    default = DEFAULT_MODBUS_TCP_PORT if kind == "tcp" else None
    try:
        host, number = parse_address(rest, default)
    except ValueError as err:
        note = "; a transparent gateway has no standard port" if default is None and "no port" in str(err) else ""
        raise ValueError(f"port {port!r}: {err}{note}") from None
    return kind, host, number


def parse_address(text: str, default: Optional[int] = None, allow_zero: bool = False) -> Tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port); ``default`` when the port is left out.
    ``allow_zero``: port 0 (a listener's "any free port")."""
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or not host:
            raise ValueError("an IPv6 address must be written [ADDRESS]")
        if tail and not tail.startswith(":"):
            raise ValueError(f"expected :PORT after [{host}]")
        number = tail[1:] if tail else None
    elif text.count(":") > 1:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:502")
    else:
        host, colon, number = text.partition(":")
        number = number if colon else None
    if not host:
        raise ValueError("no host given")
    if number is None:
        if default is None:
            raise ValueError("no port given (HOST:PORT)")
        return host, default
    lowest = 0 if allow_zero else 1
    if not number.isdigit() or not lowest <= int(number) <= 65535:
        raise ValueError(f"TCP port must be a number {lowest}-65535, not {number!r}")
    return host, int(number)


class TcpTransport:
    """A gateway's socket: connect with a timeout, write frames, read by deadline.

    ``received`` holds what arrived since the last write (the latest reply,
    good or not): the link above looks at it to tell a silent connection from
    one that answers in the other framing.
    """

    def __init__(self, port: str, char_time: float = DEFAULT_CHAR_TIME,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
        self.kind, self.host, self.tcp_port = parse_port(port)
        if connect_timeout <= 0:
            raise ValueError(f"connect timeout must be positive, not {connect_timeout}")
        self.port = port
        self.char_time = char_time
        self.connect_timeout = connect_timeout
        self.received = bytearray()
        self._sock: Optional[socket.socket] = None

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        self.close()               # a second open starts a fresh connection, never leaks one
        try:
            sock = socket.create_connection((self.host, self.tcp_port), timeout=self.connect_timeout)
        except OSError as err:    # refused, unreachable, unknown host, connect timeout
            raise TransportError(f"cannot connect to {self.port}: {_reason(err)}") from err
        try:
            # a request is one small write: without this, Nagle can hold it back ~50 ms
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as err:
            sock.close()
            raise TransportError(f"{self.port}: {_reason(err)}") from err
        self._sock = sock          # its timeout (the connect timeout) now bounds a blocked write
        self.received.clear()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def clear_input(self) -> None:
        """Drop whatever already arrived (a late reply), without waiting for more."""
        sock = self._require_open()
        while select.select([sock], [], [], 0)[0]:
            if not self._recv(sock, 4096):
                raise TransportError(f"{self.port}: connection closed by the gateway")

    def write(self, data: bytes) -> None:
        """Send one frame.  No silence is kept here: the gateway puts its own gap between
        the frames on its serial line, and a Modbus TCP gateway needs none at all."""
        sock = self._require_open()
        self.received.clear()
        try:
            sock.sendall(data)
        except OSError as err:     # reset, broken pipe, or a write blocked past the timeout
            raise TransportError(f"{self.port}: write failed: {_reason(err)}") from err

    def read(self, size: int, deadline: float) -> bytes:
        """Up to ``size`` bytes; fewer only when the deadline passes first.
        A closed or reset connection is a TransportError, even part way through a reply."""
        sock = self._require_open()
        buf = bytearray()
        while len(buf) < size:
            remaining = max(0.0, deadline - time.monotonic())
            if not select.select([sock], [], [], remaining)[0]:
                break
            chunk = self._recv(sock, size - len(buf))
            if chunk is None:
                continue
            if not chunk:
                raise TransportError(f"{self.port}: connection closed by the gateway")
            buf += chunk
        return bytes(buf)

    def settle(self, quiet: float, limit: float) -> None:
        """Discard input until the socket has been quiet for ``quiet`` s (at most ``limit`` s)."""
        drain(self, quiet, limit)

    def _recv(self, sock: socket.socket, size: int) -> Optional[bytes]:
        """One recv: the bytes (b'' at end of stream), or None for a spurious wake-up."""
        try:
            chunk = sock.recv(size)
        except (BlockingIOError, InterruptedError, socket.timeout):
            return None
        except OSError as err:
            raise TransportError(f"{self.port}: read failed: {_reason(err)}") from err
        self.received += chunk
        del self.received[:-RECEIVED_KEPT]
        return chunk

    def _require_open(self) -> socket.socket:
        if self._sock is None:
            raise TransportError(f"{self.port} is not connected")
        return self._sock


def _reason(err: OSError) -> str:
    """An OSError as a person reads it: 'connection refused', 'timed out'."""
    if isinstance(err, socket.timeout):
        return "timed out"
    return err.strerror.lower() if err.strerror else str(err) or type(err).__name__
