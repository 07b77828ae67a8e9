"""MODBUS/RTU framing: build a read request, read exactly one reply, check it.

umodbus builds the request ADU and parses the payload; the reading and every
check umodbus leaves out (slave id, function code, byte count) are ours, so
a late or stray frame is never taken for the answer.  Each way an exchange
can fail is its own exception, with a ``kind`` that /status counts.

MODBUS/RTU has no transaction id: a late reply to an earlier request that
arrives after the next request went out looks like a good answer when both
requests have the same shape (a retry does).  Such a reply is always followed
by the real answer, so a reply must stand alone: bytes within the inter-frame
silence after it make the exchange ``malformed``.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, TypeVar

from umodbus.client.serial import rtu as umodbus_rtu
from umodbus.client.serial.redundancy_check import get_crc

from ..transport import Line, LineCost, OnTransport, Transport, silence_time
from .timed import TimedLine

T = TypeVar("T")

REQUEST_BYTES = 8          # slave, fc, address (2), count (2), CRC (2)
WRITE_REPLY_BYTES = 8      # FC 16 echo: slave, fc, address (2), count (2), CRC (2)
WRITE_MULTIPLE = 0x10
MAX_WRITE_REGISTERS = 123  # MODBUS limit for FC 16
REPLY_OVERHEAD = 5         # slave, fc, byte count, CRC (2)
EXCEPTION_BYTES = 5        # slave, fc | 0x80, code, CRC (2)
MAX_READ_REGISTERS = 125   # MODBUS limit for FC 03 / 04

EXCEPTION_TEXT = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
}


class ModbusError(Exception):
    """An exchange that gave no usable reply."""

    kind = "error"


class NoReply(ModbusError):
    kind = "timeout"


class ShortReply(ModbusError):
    kind = "short"


class CRCError(ModbusError):
    kind = "crc"


class MalformedReply(ModbusError):
    """Wrong slave id, function code or byte count."""

    kind = "malformed"


class ExceptionReply(ModbusError):
    kind = "exception"

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"exception {code} ({EXCEPTION_TEXT.get(code, 'unknown')})")


ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3

ERROR_KINDS = (NoReply.kind, ShortReply.kind, CRCError.kind, MalformedReply.kind, ExceptionReply.kind)


def build_request(slave: int, fc: int, start: int, count: int) -> bytes:
    """The request ADU for reading ``count`` registers (FC 03 or FC 04)."""
    if fc == 0x03:
        return bytes(umodbus_rtu.read_holding_registers(slave, start, count))
    if fc == 0x04:
        return bytes(umodbus_rtu.read_input_registers(slave, start, count))
    raise ValueError(f"function code {fc} is not a register read")


def build_write(slave: int, start: int, values: List[int]) -> bytes:
    """The FC 16 (write multiple registers) request ADU; ``values`` are 16-bit words."""
    if not 1 <= len(values) <= MAX_WRITE_REGISTERS or not all(0 <= v <= 0xFFFF for v in values):
        raise ValueError("FC 16 writes 1-123 words of 16 bits")
    return bytes(umodbus_rtu.write_multiple_registers(slave, start, list(values)))


def reply_bytes(count: int) -> int:
    return REPLY_OVERHEAD + 2 * count


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and get_crc(frame[:-2]) == frame[-2:]


def check_alone(line: Line) -> None:
    """A complete reply must be followed by silence; more bytes mean two frames ran together
    (a late answer and this one, or noise), and neither can be trusted."""
    if line.read(1, time.monotonic() + silence_time(line.char_time)):
        raise MalformedReply("more bytes right after the reply (a late answer or a collision)")


def read_head(line: Line, request: bytes, deadline: float, first_by: Optional[float] = None) -> bytes:
    """The first three bytes of the reply to ``request``, its slave and function code checked;
    an exception reply is read whole and raised as :class:`ExceptionReply`."""
    slave, fc = request[0], request[1]
    head = line.read(1, deadline if first_by is None else first_by)   # alone: its arrival is timed
    if not head:
        raise NoReply("no reply")
    if len(head) < 3:
        head += line.read(3 - len(head), deadline)
    if len(head) < 3:
        raise ShortReply(f"reply cut short after {len(head)} bytes")
    if head[0] != slave:
        raise MalformedReply(f"reply from slave {head[0]}")
    if head[1] == fc | 0x80:
        frame = head + line.read(EXCEPTION_BYTES - 3, deadline)
        if len(frame) < EXCEPTION_BYTES:
            raise ShortReply("exception reply cut short")
        check_alone(line)
        if not crc_ok(frame):
            raise CRCError("bad CRC on exception reply")
        raise ExceptionReply(frame[2])
    if head[1] != fc:
        raise MalformedReply(f"reply with function code {head[1]}")
    return head


def read_reply(line: Line, request: bytes, deadline: float, first_by: Optional[float] = None) -> List[int]:
    """Read and check the reply to ``request``; the registers, or a ModbusError.

    With ``first_by`` the reply must begin by then (a scan's short wait).
    """
    count = int.from_bytes(request[4:6], "big")
    head = read_head(line, request, deadline, first_by)
    if head[2] != 2 * count:
        raise MalformedReply(f"reply with byte count {head[2]}, expected {2 * count}")
    frame = head + line.read(2 * count + 2, deadline)
    if len(frame) < reply_bytes(count):
        raise ShortReply(f"reply cut short after {len(frame)} of {reply_bytes(count)} bytes")
    check_alone(line)
    if not crc_ok(frame):
        raise CRCError("bad CRC")
    return list(umodbus_rtu.parse_response_adu(frame, request))


def exchange(line: Line, slave: int, fc: int, start: int, count: int, timeout: float,
             prompt: bool = False) -> List[int]:
    """One request and its checked reply, under one deadline.

    The deadline allows for the request's own transmission, ``timeout`` of
    meter turnaround and the reply's transmission.  ``prompt``: a reply that
    has not begun within ``timeout`` after the request left counts as none,
    so a silent id costs no reply time (bus scans).  After any failure the
    line is left to fall quiet, so stray bytes of this exchange cannot be
    taken for the next reply.
    """
    request = build_request(slave, fc, start, count)
    return _transact(line, request, reply_bytes(count), timeout,
                     lambda deadline, first_by: read_reply(line, request, deadline, first_by), prompt)


def _transact(line: Line, request: bytes, reply_size: int, timeout: float,
              read: Callable[[float, Optional[float]], T], prompt: bool = False) -> T:
    """Send ``request`` and ``read`` its reply by one deadline; let the line settle after a failure."""
    line.clear_input()
    line.write(request)
    sent = time.monotonic() + line.char_time * len(request)
    deadline = sent + line.char_time * reply_size + timeout
    first_by = sent + timeout + line.char_time if prompt else None
    try:
        return read(deadline, first_by)
    except ModbusError:
        line.settle(quiet=max(8 * line.char_time, 0.005), limit=timeout)
        raise


def read_echo(line: Line, request: bytes, deadline: float) -> None:
    """Read and check the reply to an FC 16 request: it must echo slave, function code,
    start address and register count exactly, with a good CRC."""
    head = read_head(line, request, deadline)
    frame = head + line.read(WRITE_REPLY_BYTES - 3, deadline)
    if len(frame) < WRITE_REPLY_BYTES:
        raise ShortReply(f"write reply cut short after {len(frame)} of {WRITE_REPLY_BYTES} bytes")
    check_alone(line)
    if not crc_ok(frame):
        raise CRCError("bad CRC on write reply")
    if frame[2:6] != request[2:6]:
        raise MalformedReply(f"write reply echoes address/count {frame[2:6].hex()}, "
                             f"expected {request[2:6].hex()}")


def write_exchange(line: Line, slave: int, start: int, values: List[int], timeout: float) -> None:
    """One FC 16 write and its checked echo, under one deadline (as :func:`exchange`)."""
    request = build_write(slave, start, values)
    _transact(line, request, WRITE_REPLY_BYTES, timeout, lambda deadline, _: read_echo(line, request, deadline))


class RtuLink(OnTransport):
    """RTU framing on a transport (a serial port, or a transparent gateway's socket): a bus's Link."""

    hint: Optional[str] = None   # a serial line has no gateway mode to get wrong (see framing.gateway)

    def __init__(self, transport: Transport, round_trip: float = 0.0):
        self.transport = transport
        self.port = transport.port
        self.kind = transport.kind
        self.cost = LineCost(transport.char_time, 3.5, round_trip)
        # bytes come at the line rate on a serial port; a gateway's socket may hand over a reply at once
        self._timed = TimedLine(transport, paced=transport.kind == "serial")
        self.turnaround: Optional[float] = None   # of the last exchange (see sdm.transport.Link)

    def exchange(self, slave: int, fc: int, start: int, count: int, timeout: float,
                 prompt: bool = False) -> List[int]:
        try:
            return exchange(self._timed, slave, fc, start, count, timeout, prompt)
        finally:
            self.turnaround = self._timed.since_write(REQUEST_BYTES * self.transport.char_time)

    def write(self, slave: int, start: int, values: List[int], timeout: float) -> None:
        """An FC 16 write and its checked echo (a served client's write, forwarded)."""
        write_exchange(self.transport, slave, start, values, timeout)
