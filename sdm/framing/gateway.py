"""What a bus behind a TCP gateway needs beyond its framing, for both framings in one place.

A serial adapter that stops working fails loudly (the device disappears); a
TCP connection can go quiet instead: a half-open socket after a gateway
reboot, or a gateway that accepts and never answers.  :class:`GatewayLink`
wraps the framing's link (RTU for ``rtu+tcp://``, MBAP for ``tcp://``) and
gives such a connection up: after ``max_silent`` requests in a row that got
no byte back, it closes the socket and raises TransportError, so the bus
reconnects with back-off as it reopens a lost serial adapter.

A single dead meter among live ones must not do this.  The poller retries
a failed request at once, and meters read on a long ``--interval`` may not be
asked for a while, so counting timeouts alone would give the connection up
for one dead meter.  The run of silence must therefore also have covered
every meter that ever answered on this link (or none has answered yet).
That rule is ours, not a standard's.

A gateway in the wrong mode is named in ``hint`` (logged once): see
:func:`looks_like_mbap` and :func:`holds_rtu_frame`, and the probe in the
other framing after a run of silence.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Optional, Set, Tuple, Union

from ..transport import OnTransport, TransportError
from ..transport.tcp import TcpTransport
from .mbap import HEADER, HEADER_BYTES, MAX_LENGTH, MIN_LENGTH, GatewayNoReply, MbapLink
from .rtu import EXCEPTION_BYTES, REPLY_OVERHEAD, ExceptionReply, ModbusError, RtuLink, crc_ok

log = logging.getLogger(__name__)

DEFAULT_MAX_SILENT = 3
HINT_USE_TCP = "this looks like a Modbus TCP gateway: use tcp://"
HINT_USE_RTU = "this looks like a transparent RTU-over-TCP gateway: use rtu+tcp://"


def looks_like_mbap(data: bytes) -> bool:
    """``data`` (the whole failed reply to an RTU request) is one MBAP frame.

    A heuristic: a Modbus TCP gateway reads our RTU request as an MBAP header
    (its first bytes as transaction id, the start address as protocol id) and
    may answer with an exception in MBAP, echoing the slave id and function
    code as the transaction id.  A real RTU reply never carries 00 00 at bytes
    2-3 (a byte count or exception code is never 0), so protocol id 0 with a
    length that matches the bytes is a strong sign, not a proof.  Gateways
    that drop such a request or close the connection give nothing to see
    here; the probe covers them.
    """
    if len(data) < HEADER_BYTES + 1:
        return False
    protocol: int
    length: int
    _, protocol, length, _ = HEADER.unpack(data[:HEADER_BYTES])
    return protocol == 0 and MIN_LENGTH <= length <= MAX_LENGTH and len(data) == HEADER_BYTES - 1 + length


def holds_rtu_frame(data: bytes) -> bool:
    """``data`` (the whole failed reply to an MBAP request) is one CRC-valid RTU reply frame.

    A heuristic, and a rare sight: a transparent gateway passes our MBAP bytes
    to the meters, which see no valid frame and stay silent.  An RTU frame
    comes back only from a device that answers anyway (another master's
    meter, a converter's own polling); silence is the usual sign, which the
    probe covers.
    """
    if len(data) < EXCEPTION_BYTES or not 1 <= data[0] <= 247:
        return False
    size = EXCEPTION_BYTES if data[1] & 0x80 else REPLY_OVERHEAD + data[2]
    return len(data) == size and crc_ok(data)


class GatewayLink(OnTransport):
    """A TCP bus's Link: the framing's exchange, a watch for a dead connection, and the mode hint.

    ``framing`` and ``other`` are links of the two framings on one transport:
    ``other`` is only used to probe once, after a run of silence, whether the
    gateway speaks it instead.  ``foreign(bytes)`` says whether a failed
    reply is recognisably in the other framing.
    """

    transport: TcpTransport

    def __init__(self, framing: Union[RtuLink, MbapLink], other: Union[RtuLink, MbapLink],
                 foreign: Callable[[bytes], bool], hint_text: str,
                 max_silent: int = DEFAULT_MAX_SILENT):
        if max_silent < 1:
            raise ValueError(f"max_silent must be at least 1, not {max_silent}")
        self.framing = framing
        self.other = other
        if not isinstance(framing.transport, TcpTransport):
            raise TypeError("a GatewayLink watches a TCP connection")
        self.transport = framing.transport
        self.port = framing.port
        self.kind = framing.kind
        self.cost = framing.cost
        self.foreign = foreign
        self.hint_text = hint_text
        self.max_silent = max_silent
        self.hint: Optional[str] = None    # set when the gateway seems to be in the other mode
        self._alive: Set[int] = set()       # slaves that gave a good reply on this link
        self._silent = 0                    # requests in a row that got not a byte back
        self._silent_ids: Set[int] = set()  # the slaves those requests went to
        self._probed = False                # the other framing was tried in this run of silence

    @property
    def turnaround(self) -> Optional[float]:
        return self.framing.turnaround

    def exchange(self, slave: int, fc: int, start: int, count: int, timeout: float,
                 prompt: bool = False) -> List[int]:
        """The framing's exchange; TransportError when the connection has gone quiet for good.

        ``prompt`` (a bus scan): most ids are empty, so their silence says
        nothing about the connection and is not counted.
        """
        try:
            registers = self.framing.exchange(slave, fc, start, count, timeout, prompt)
        except ModbusError:
            self._failed(slave, (slave, fc, start, count, timeout), prompt)
            raise
        except TransportError:
            self._lost((slave, fc, start, count, timeout))
            raise
        self._answered(slave)
        return registers

    def _answered(self, slave: int) -> None:
        self._alive.add(slave)
        self._end_silence()
        if self.hint is not None:
            log.info("bus %s: meter %d answers; the gateway mode is right after all", self.port, slave)
            self.hint = None

    def _failed(self, slave: int, request: Tuple[int, int, int, int, float], prompt: bool) -> None:
        received = bytes(self.transport.received)
        if received:
            self._end_silence()         # bytes came back: the connection works
            if self.foreign(received):
                self._set_hint(f"the reply to meter {slave} is in the other framing")
            return
        if prompt:
            return
        self._silent += 1
        self._silent_ids.add(slave)
        if self._silent >= self.max_silent and self._alive <= self._silent_ids:
            self._probe_other(request)
            silent, self._silent, self._silent_ids = self._silent, 0, set()
            self.close()
            raise TransportError(f"{self.port}: not a byte back for {silent} requests in a row, "
                                 f"from any meter; reconnecting")

    def _lost(self, request: Tuple[int, int, int, int, float]) -> None:
        """The gateway closed or reset the connection during an exchange: the bus reconnects.
        A gateway that closes on every request it cannot parse is probed like a silent one."""
        self._silent += 1
        if self._silent >= self.max_silent:
            self._probe_other(request)

    def _end_silence(self) -> None:
        self._silent = 0
        self._silent_ids.clear()
        self._probed = False

    def _probe_other(self, request: Tuple[int, int, int, int, float]) -> None:
        """Send the failing request once in the other framing, on a fresh connection (the
        old one is dead or closed); a valid reply sets the hint.

        Any reply that framing understands counts, an exception too.  The
        connection is closed afterwards either way: bytes of a foreign frame
        may still be on their way.
        """
        if self._probed:
            return
        self._probed = True
        slave, fc, start, count, timeout = request
        self.transport.close()
        try:
            self.transport.open()
            self.other.exchange(slave, fc, start, count, timeout)
        except (ExceptionReply, GatewayNoReply):
            understood = True
        except (ModbusError, TransportError) as err:
            log.debug("bus %s: probe of meter %d in the other framing: %s", self.port, slave, err)
            understood = False
        else:
            understood = True
        self.transport.close()
        if understood:
            self._set_hint(f"meter {slave} answered a probe in the other framing")

    def _set_hint(self, why: str) -> None:
        if self.hint is None:
            log.warning("bus %s: %s (%s)", self.port, self.hint_text, why)
        self.hint = self.hint_text
