"""The simulator's end of the wire: a pty pair with a stable link to the gateway's end."""

from __future__ import annotations

import os
import select
import termios
import tty
from typing import Optional, Protocol

# termios speed constants -> baud rate
BAUD_RATES = {getattr(termios, f"B{rate}"): rate for rate in (1200, 2400, 4800, 9600, 19200, 38400)}


class ByteLine(Protocol):
    """What the simulator serves meters on: the pty, a TCP connection, or one of the wrappers that add
    latency, pacing or an unplugged cable to another line."""

    def read(self, timeout: Optional[float]) -> bytes: ...
    def write(self, data: bytes) -> None: ...


class PtyLine:
    """Opens a pty pair and links ``link`` to the slave end that a gateway opens.

    The simulator keeps the slave end open itself, so a gateway closing and
    reopening the port never makes the master end fail.
    """

    def __init__(self, link: str, publish: bool = True):
        self.link = link
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.slave_path = os.ttyname(self.slave)
        if publish:
            self.publish()

    def publish(self) -> None:
        """Point the link at this pty (atomically replacing what it pointed to)."""
        tmp = f"{self.link}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.slave_path, tmp)
        os.replace(tmp, self.link)

    def read(self, timeout: Optional[float]) -> bytes:
        """Whatever the gateway sent, or b'' when nothing came within ``timeout``."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def baud(self) -> Optional[int]:
        """The baud rate the gateway's end is set to (a pty keeps it, though it moves bytes at any rate)."""
        try:
            return BAUD_RATES.get(termios.tcgetattr(self.slave)[5])
        except termios.error:
            return None

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if os.path.islink(self.link) and os.readlink(self.link) == self.slave_path:
            os.unlink(self.link)
