"""Framing: the bytes of a MODBUS request and the checks every reply must pass.

``rtu`` frames for a serial line or a transparent RTU-over-TCP gateway;
``mbap`` for Modbus TCP.  Each exposes a Link (see sdm.transport) a bus polls through.
"""

from __future__ import annotations

from ..transport import Comset, Link
from ..transport.serial import SerialTransport
from ..transport.tcp import DEFAULT_CONNECT_TIMEOUT, TCP_ROUND_TRIP, TcpTransport, is_tcp_port
from .gateway import HINT_USE_RTU, HINT_USE_TCP, GatewayLink, holds_rtu_frame, looks_like_mbap
from .mbap import MbapLink
from .rtu import RtuLink


def make_link(port: str, baud: int = 9600, parity: str = "N",
              connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Link:
    """The Link for a configured port: a serial path, ``rtu+tcp://host:port`` or ``tcp://host[:port]``.

    ``baud`` and ``parity`` are the serial line's, local or behind the
    gateway (there they only size the waits and the planner's costs).
    Nothing is opened yet; a bad port or setting is a ValueError.
    """
    line = _comset(baud, parity)
    if not is_tcp_port(port):
        if "://" in port:
            raise ValueError(f"port {port!r}: unknown scheme (use a serial device path, "
                             f"rtu+tcp://HOST:PORT or tcp://HOST[:PORT])")
        return RtuLink(SerialTransport(port, line))
    transport = TcpTransport(port, line.char_time, connect_timeout)
    rtu_link, mbap_link = RtuLink(transport, TCP_ROUND_TRIP), MbapLink(transport)
    if transport.kind == "rtu+tcp":
        return GatewayLink(rtu_link, mbap_link, looks_like_mbap, HINT_USE_TCP)
    return GatewayLink(mbap_link, rtu_link, holds_rtu_frame, HINT_USE_RTU)


def _comset(baud: int, parity: str) -> Comset:
    if baud <= 0:
        raise ValueError(f"baud rate must be positive, not {baud}")
    if parity not in ("N", "E"):
        raise ValueError(f"parity must be N or E, not {parity!r}")
    return Comset(baud, parity)
