"""A serial RS485 adapter opened with pyserial, read and written by us.

It is a :class:`sdm.transport.Line` for RTU framing.  Reads wait in ``select``;
in the gateway the bus runs in a thread of its own, so the wait blocks only
that thread.  ``flush()`` (tcdrain) is never called: a frame's end is computed
from its length and the line rate instead.
"""

from __future__ import annotations

import os
import termios
import time
from typing import Optional

import serial
from gevent import monkey

from . import Comset, TransportError, drain, silence_time

# The plain system calls even where gevent has patched the modules: a bus runs in a thread of its
# own (sdm/bus.py), and there a blocking wait blocks only that bus.
_select = monkey.get_original("select", "select")
_sleep = monkey.get_original("time", "sleep")


def ready_now(fd: int) -> bool:
    """Readable (data or a hang-up) at this instant."""
    return bool(_select([fd], [], [], 0)[0])


class SerialTransport:
    """An RS485 adapter: open, write frames with the silence between them, read by deadline."""

    kind = "serial"

    def __init__(self, path: str, settings: Comset):
        self.path = path
        self.port = path
        self.settings = settings
        self.char_time = settings.char_time
        self._port: Optional[serial.Serial] = None
        self._fd = -1
        self._quiet_since = 0.0   # when the line last carried a byte, ours or a meter's

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        try:
            self._port = serial.Serial(
                self.path, self.settings.baud, bytesize=8, parity=self.settings.parity,
                stopbits=1, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as err:
            self._port = None
            raise TransportError(f"cannot open {self.path}: {err}") from err
        self._fd = self._port.fileno()
        self._quiet_since = time.monotonic()
        try:
            self.clear_input()
        except TransportError:
            self.close()     # never left half open: is_open must mean usable
            raise

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def clear_input(self) -> None:
        port = self._require_open()
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError, TypeError, termios.error) as err:
            # termios.error is not an OSError: an unplugged adapter raises it here
            raise TransportError(f"{self.path}: {err}") from err

    def write(self, data: bytes) -> None:
        """Send one frame after the line has been quiet for the MODBUS silence."""
        self._require_open()
        wait = self._quiet_since + silence_time(self.char_time) - time.monotonic()
        if wait > 0:
            _sleep(wait)
        try:
            written = os.write(self._fd, data)
        except OSError as err:
            raise TransportError(f"{self.path}: write failed: {err}") from err
        if written != len(data):
            raise TransportError(f"{self.path}: only {written} of {len(data)} bytes written")
        self._quiet_since = time.monotonic() + len(data) * self.char_time

    def read(self, size: int, deadline: float) -> bytes:
        """Up to ``size`` bytes; fewer only when the deadline passes first."""
        self._require_open()
        buf = bytearray()
        while len(buf) < size:
            if buf:
                self._await_rest(size - len(buf), deadline)
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    ready = _select([self._fd], [], [], remaining)[0]
                if (remaining <= 0 or not ready) and not ready_now(self._fd):
                    break
                chunk = os.read(self._fd, size - len(buf))
            except (BlockingIOError, InterruptedError):
                continue   # a spurious wake-up, not a failing adapter
            except (OSError, ValueError) as err:
                raise TransportError(f"{self.path}: read failed: {err}") from err
            if not chunk:
                raise TransportError(f"{self.path}: adapter gone (end of file)")
            buf += chunk
            self._quiet_since = time.monotonic()
        return bytes(buf)

    def _await_rest(self, missing: int, deadline: float) -> None:
        """Sleep while ``missing`` more bytes cannot have arrived yet at the line rate.

        A reply trickles in a few bytes at a time; waking for each chunk costs
        CPU (a Pi's) for nothing, since the rest needs at least this long.
        """
        if missing > 0:
            wait = min(missing * self.char_time, deadline - time.monotonic())
            if wait > 0:
                _sleep(wait)

    def settle(self, quiet: float, limit: float) -> None:
        """Discard input until the line has been quiet for ``quiet`` s (at most ``limit`` s)."""
        drain(self, quiet, limit)

    def _require_open(self) -> serial.Serial:
        if self._port is None:
            raise TransportError(f"{self.path} is not open")
        return self._port
