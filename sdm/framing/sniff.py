"""Cutting an RTU byte stream into frames, for a device that is not the bus's master.

The RTU slave of sdm/serve.py and the listener of sdm/listen.py read a line
that someone else drives.  They take what arrives until the line has been
quiet for the MODBUS silence (:func:`read_chunk`), then cut the chunk into
frames by the lengths the function code allows and the CRC (:func:`cut`):
timing alone is not enough, since a pty (and a USB adapter's latency) can
hand over a request and its reply in one read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Tuple

from ..transport import Line, silence_time
from .rtu import EXCEPTION_BYTES, REQUEST_BYTES, crc_ok

READ_FUNCTIONS = (0x01, 0x02, 0x03, 0x04)
SINGLE_WRITES = (0x05, 0x06)
MULTIPLE_WRITES = (0x0F, 0x10)
WRITE_HEAD = 7        # slave, fc, address (2), count (2), byte count


def read_chunk(line: Line, wait: float, now: float) -> bytes:
    """Bytes from ``line`` up to the first silence after them, or up to the end of a whole frame
    (a slave must be ready to answer as soon as the silence after a request has passed); b'' when
    nothing came within ``wait``."""
    data = line.read(1, now + wait)
    if not data:
        return b""
    silence = silence_time(line.char_time)
    needed = missing(data)
    while needed:
        more = line.read(needed, time.monotonic() + needed * line.char_time + silence)
        if not more:
            break
        data += more
        needed = missing(data)
    return data


def missing(data: bytes) -> int:
    """Bytes still to come before ``data`` ends with a whole frame: 0 when it does, else the
    fewest that would complete the frame under way (1 for bytes that fit no frame yet)."""
    at = 0
    while at < len(data):
        rest = data[at:]
        lengths = frame_lengths(rest)
        size = next((n for n in lengths if n <= len(rest) and crc_ok(rest[:n])), 0)
        if not size:
            longer = [n for n in lengths if n > len(rest)]
            return min(longer) - len(rest) if longer else 1
        at += size
    return 0


def frame_lengths(data: bytes) -> List[int]:
    """The lengths a frame starting at data[0] can have, by its function code (request or reply)."""
    if len(data) < 2:
        return []
    fc = data[1]
    if fc & 0x80:
        return [EXCEPTION_BYTES]
    lengths = []
    if fc in READ_FUNCTIONS or fc in SINGLE_WRITES:
        lengths.append(REQUEST_BYTES)          # a request; for 05/06 also the echo reply
    if fc in READ_FUNCTIONS:
        # a reply: slave, fc, byte count, data, CRC; before its byte count is in, its shortest
        lengths.append(5 + data[2] if len(data) >= 3 else 6)
    if fc in MULTIPLE_WRITES:
        lengths.append(REQUEST_BYTES)          # the reply: slave, fc, address, count, CRC
        if len(data) >= WRITE_HEAD:
            lengths.append(WRITE_HEAD + data[6] + 2)
    return lengths


@dataclass(frozen=True)
class Cut:
    frames: List[bytes]
    garbled: int            # bytes that belong to no frame with a good CRC


def cut(chunk: bytes) -> Cut:
    """The CRC-valid frames in ``chunk``, in order; bytes between them that fit none are counted."""
    frames: List[bytes] = []
    garbled = 0
    at = 0
    while at < len(chunk):
        rest = chunk[at:]
        size = next((n for n in frame_lengths(rest) if n <= len(rest) and crc_ok(rest[:n])), 0)
        if size:
            frames.append(bytes(rest[:size]))
            at += size
        else:
            garbled += 1
            at += 1
    return Cut(frames, garbled)


def frame_kind(frame: bytes) -> Tuple[str, int, int]:
    """('request' | 'reply' | 'exception', slave, fc) of a CRC-valid frame, by its shape."""
    slave, fc = frame[0], frame[1]
    if fc & 0x80:
        return "exception", slave, fc & 0x7F
    if fc in READ_FUNCTIONS:
        # a read request is 8 bytes; a reply of 8 bytes would carry an odd byte count (3)
        return ("request" if len(frame) == REQUEST_BYTES else "reply"), slave, fc
    if fc in MULTIPLE_WRITES:
        return ("reply" if len(frame) == REQUEST_BYTES else "request"), slave, fc
    return "request", slave, fc          # 05 / 06: request and echo look alike
