"""Writes a served unit's client asks for, carried to the real meter by its bus's poller.

A Modbus server thread hands a :class:`ForwardedWrite` to the poller of the
meter's bus (a deque: appending and popping are atomic) and waits for it; the
poller sends it between two of its reads, so the bus keeps one master and one
timing.  The waiting uses the unpatched ``threading.Event``: both sides are
native threads, gevent's event would not wake across them.
"""

from __future__ import annotations

from typing import List, Optional, Protocol, runtime_checkable

from gevent import monkey

from .framing import rtu
from .transport import TransportError

NativeEvent = monkey.get_original("threading", "Event")


@runtime_checkable
class Writer(Protocol):
    """A link that can send an FC 16 write (sdm.framing.rtu.RtuLink)."""

    def write(self, slave: int, start: int, values: List[int], timeout: float) -> None: ...


class ForwardedWrite:
    """One FC 16 write of ``words`` at ``start`` to meter ``device_id``; ``error`` is None on success,
    else the MODBUS exception code for the client (0x0B when the meter did not answer)."""

    def __init__(self, device_id: int, start: int, words: List[int], client: str):
        self.device_id = device_id
        self.start = start
        self.words = list(words)
        self.client = client
        self.error: Optional[int] = None
        self._done = NativeEvent()
        self._abandoned = False

    def execute(self, link: Writer, timeout: float) -> None:
        """Called by the poller: the write and its checked echo on the bus."""
        try:
            if not self._abandoned:
                link.write(self.device_id, self.start, self.words, timeout)
        except rtu.ExceptionReply as err:
            self.error = err.code
        except (rtu.ModbusError, TransportError):
            self.error = GATEWAY_TARGET_FAILED
        finally:
            self._done.set()

    def refuse(self) -> None:
        """The bus cannot carry the write: the client gets 0x0B."""
        self.error = GATEWAY_TARGET_FAILED
        self._done.set()

    def wait(self, timeout: float) -> int:
        """The outcome for the client: 0 for success, else an exception code.  A write the bus
        did not take in time is dropped (it will not go out later)."""
        if not self._done.wait(timeout):
            self._abandoned = True
            return GATEWAY_TARGET_FAILED
        return self.error or 0


GATEWAY_TARGET_FAILED = 0x0B
FORWARD_WAIT = 3.0          # seconds a served client waits for its forwarded write
