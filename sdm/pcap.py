"""A capture of bus frames that Wireshark opens: pcapng with one RTU frame per packet.

There is no link type for MODBUS/RTU on a serial line, so frames are stored
under ``DLT_USER0`` (147), the link type pcap sets aside for private use.
Wireshark decodes them once told what DLT_USER0 carries: Edit > Preferences >
Protocols > DLT_USER > Edit, add DLT ``User 0 (DLT=147)`` with payload protocol
``mbrtu``.  Each packet carries its direction (pcapng ``epb_flags``: inbound
for what the meters sent, outbound for our requests) and, as its comment,
the doctor's verdict (``ok``, ``crc``, ``stray``, ...); both show in the packet
details.  Timestamps are in microseconds.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_USER0 = 147
INBOUND, OUTBOUND = 1, 2
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_COMMENT, _OPT_EPB_FLAGS, _OPT_END = 1, 2, 0


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _padded(value)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


class PcapWriter:
    """Writes a section header and one interface at once, then a packet per :meth:`frame`."""

    def __init__(self, stream: BinaryIO, snaplen: int = 512):
        self.stream = stream
        stream.write(_block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)))
        stream.write(_block(_IDB, struct.pack("<HHI", LINKTYPE_USER0, 0, snaplen)))

    def frame(self, timestamp: float, data: bytes, inbound: bool, verdict: str) -> None:
        """One frame: ``timestamp`` in seconds since the epoch, ``inbound`` when a meter (or another
        device) sent it, ``verdict`` what the doctor made of it."""
        micros = int(round(timestamp * 1_000_000))
        options = (_option(_OPT_EPB_FLAGS, struct.pack("<I", INBOUND if inbound else OUTBOUND))
                   + _option(_OPT_COMMENT, verdict.encode("utf-8")) + struct.pack("<HH", _OPT_END, 0))
        body = struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(data), len(data))
        self.stream.write(_block(_EPB, body + _padded(data) + options))
