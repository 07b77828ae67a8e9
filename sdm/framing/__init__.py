"""Framing: the bytes of a MODBUS request and the checks every reply must pass.

``rtu`` frames for a serial line or a transparent RTU-over-TCP gateway;
``mbap`` for Modbus TCP.  Each exposes a Link (see sdm.transport) a bus polls through.
"""

from __future__ import annotations

from ..transport import Comset, Link
from ..transport.serial import SerialTransport
from .rtu import RtuLink


def make_link(port: str, baud: int = 9600, parity: str = "N") -> Link:
    """The link for a configured port (a serial device path)."""
    return RtuLink(SerialTransport(port, Comset(baud, parity)))
