"""Modbus TCP framing: the MBAP header, our transaction ids, and the checks every reply must pass.

umodbus builds the request (``umodbus.client.tcp``); its transaction id is
random, so we put our own increasing one in its place.  umodbus's parser
checks none of the header (shared/reference/ecosystem.md 4.6): the
transaction id, protocol id, length, unit id, function code and byte count
are all checked here, and each failure is one of the error kinds of
sdm.framing.rtu (there is no CRC on TCP).

A reply with an older transaction id is a late answer to an earlier request
(one we gave up on): it is read past and never taken as the answer, and the
real one may still come before the deadline.
"""

from __future__ import annotations

import struct
import time
from typing import List, Optional

from umodbus.client import tcp as umodbus_tcp

from ..transport import Line, LineCost, OnTransport, Transport
from ..transport.tcp import TCP_ROUND_TRIP
from .rtu import REQUEST_BYTES, ExceptionReply, MalformedReply, ModbusError, NoReply, ShortReply, reply_bytes
from .timed import TimedLine

HEADER = struct.Struct(">HHHB")     # transaction id, protocol id, length, unit id
HEADER_BYTES = HEADER.size          # 7
MIN_LENGTH = 3                      # unit id, function code | 0x80, exception code
MAX_LENGTH = 254                    # unit id + the largest PDU (253 bytes)
TID_MODULUS = 0x10000
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_NO_REPLY = 0x0B


class GatewayNoReply(NoReply):
    """The gateway answered, in good MBAP, that the meter behind it did not (exception 10 or 11).

    A timeout for the meter (counted as one), but proof that the connection works.
    """


def build_request(tid: int, slave: int, fc: int, start: int, count: int) -> bytes:
    """The request ADU for reading ``count`` registers (FC 03 or FC 04) with transaction id ``tid``."""
    if fc == 0x03:
        adu = umodbus_tcp.read_holding_registers(slave, start, count)
    elif fc == 0x04:
        adu = umodbus_tcp.read_input_registers(slave, start, count)
    else:
        raise ValueError(f"function code {fc} is not a register read")
    return struct.pack(">H", tid % TID_MODULUS) + bytes(adu[2:])


def is_older(tid: int, current: int) -> bool:
    """``tid`` was sent before ``current`` (within the last half of the id space, across the wrap)."""
    return 0 < (current - tid) % TID_MODULUS < TID_MODULUS // 2


def read_reply(line: Line, request: bytes, deadline: float) -> List[int]:
    """Read and check the reply to ``request``; the registers, or a ModbusError.

    Replies to earlier requests (older transaction ids) are skipped; reading
    goes on until the deadline.
    """
    tid, _, _, slave = HEADER.unpack(request[:HEADER_BYTES])
    while True:
        header = line.read(HEADER_BYTES, deadline)
        if not header:
            raise NoReply("no reply")
        if len(header) < HEADER_BYTES:
            raise ShortReply(f"reply cut short after {len(header)} bytes")
        reply_tid, protocol, length, unit = HEADER.unpack(header)
        if protocol != 0:
            raise MalformedReply(f"reply with protocol id {protocol}, not 0 (Modbus)")
        if not MIN_LENGTH <= length <= MAX_LENGTH:
            raise MalformedReply(f"reply with MBAP length {length}")
        pdu = line.read(length - 1, deadline)
        if len(pdu) < length - 1:
            raise ShortReply(f"reply cut short after {HEADER_BYTES + len(pdu)} of {HEADER_BYTES + length - 1} bytes")
        if reply_tid == tid:
            return check_pdu(header + pdu, request, unit, slave)
        if not is_older(reply_tid, tid):
            raise MalformedReply(f"reply with transaction id {reply_tid}, expected {tid}")
        # a late answer to an earlier request: skipped, the real answer may still come


def check_pdu(reply: bytes, request: bytes, unit: int, slave: int) -> List[int]:
    """The checks after the header: unit id, function code or exception, byte count, length."""
    fc, count = request[HEADER_BYTES], int.from_bytes(request[-2:], "big")
    pdu = reply[HEADER_BYTES:]
    if unit != slave:
        raise MalformedReply(f"reply for unit id {unit}, expected {slave}")
    if pdu[0] == fc | 0x80 and len(pdu) == 2:
        if pdu[1] in (GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_NO_REPLY):
            raise GatewayNoReply(f"gateway: no reply from unit {slave} (exception {pdu[1]})")
        raise ExceptionReply(pdu[1])
    if pdu[0] != fc:
        raise MalformedReply(f"reply with function code {pdu[0]}")
    if len(pdu) < 2 or pdu[1] != 2 * count:
        raise MalformedReply(f"reply with byte count {pdu[1] if len(pdu) > 1 else None}, expected {2 * count}")
    if len(pdu) != 2 + 2 * count:
        raise MalformedReply(f"reply with MBAP length {len(pdu) + 1}, expected {3 + 2 * count}")
    return list(umodbus_tcp.parse_response_adu(reply, request))


def serial_time(char_time: float, count: int) -> float:
    """The gateway's serial side of one read: the RTU request, the silence, the reply."""
    return char_time * (REQUEST_BYTES + 3.5 + reply_bytes(count))


class MbapLink(OnTransport):
    """Modbus TCP on a transport (a gateway's socket): a bus's Link.

    One request is in flight at a time: ``exchange`` reads its reply (or
    gives up on it) before it returns, and the link belongs to one bus thread.
    """

    def __init__(self, transport: Transport, round_trip: float = TCP_ROUND_TRIP):
        self.transport = transport
        self.port = transport.port
        self.kind = transport.kind
        self.cost = LineCost(transport.char_time, silence_chars=0.0, round_trip=round_trip)
        self._tid = 0
        self._timed = TimedLine(transport, paced=False)
        # of the last exchange (see sdm.transport.Link); a gateway forwards a reply whole, so this
        # is the network round trip, the meter's turnaround and the silence before its reply
        self.turnaround: Optional[float] = None

    def exchange(self, slave: int, fc: int, start: int, count: int, timeout: float,
                 prompt: bool = False) -> List[int]:
        """One request and its checked reply, under one deadline.

        The deadline allows for the gateway's serial side and ``timeout`` of
        meter turnaround plus network.  ``prompt`` is the scanner's short wait:
        a gateway forwards a reply only once it is complete, so every wait here
        already is the shortest a reply needs, and ``prompt`` changes nothing.
        After a failure the socket is left to fall quiet, so stray bytes of
        this exchange cannot be read as the next reply's header.
        """
        del prompt
        self._tid = (self._tid + 1) % TID_MODULUS
        request = build_request(self._tid, slave, fc, start, count)
        line = self._timed
        line.clear_input()
        line.write(request)
        deadline = time.monotonic() + serial_time(line.char_time, count) + timeout
        try:
            return read_reply(line, request, deadline)
        except ModbusError:
            line.settle(quiet=max(8 * line.char_time, 0.005), limit=timeout)
            raise
        finally:
            self.turnaround = line.since_write(serial_time(line.char_time, count))
