"""The serial transport on a real pty: an adapter that goes away is a TransportError, whatever the call."""

import os
import time
import tty

import pytest
from gevent import monkey

from sdm.bus import blocking_sleep
from sdm.transport import COMSETS, TransportError
from sdm.transport.serial import SerialTransport, ready_now
from tests.support import wait_until


@pytest.fixture
def pty_transport():
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    transport = SerialTransport(os.ttyname(slave), COMSETS[2])
    transport.open()
    fds = {"master": master, "slave": slave}
    yield transport, fds
    transport.close()
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass


def unplug(fds):
    os.close(fds.pop("master"))
    os.close(fds.pop("slave"))


@pytest.mark.parametrize("call", [
    lambda t: t.clear_input(),
    lambda t: t.read(5, time.monotonic() + 0.5),
    lambda t: t.write(b"\x01\x04\x00\x00\x00\x02\x71\xcb"),
    lambda t: t.settle(0.01, 0.5),
], ids=["clear_input", "read", "write", "settle"])
def test_unplugged_adapter_raises_transport_error(pty_transport, call):
    transport, fds = pty_transport
    assert transport.read(1, time.monotonic() + 0.01) == b""   # an idle wait first: gevent then misses
    unplug(fds)                                                 # the hang-up once (select alone would)
    wait_until(lambda: ready_now(transport._fd), 2, what="the kernel to hang the pty up")
    with pytest.raises(TransportError):
        call(transport)


def test_unplug_during_a_wait_is_noticed_by_the_deadline(pty_transport):
    """A hang-up that happens while a read waits ends the wait with TransportError, never as a
    silent meter.  The read blocks its thread (as in a bus thread), so another thread unplugs."""
    transport, fds = pty_transport
    start_thread = monkey.get_original("_thread", "start_new_thread")
    start_thread(lambda: (blocking_sleep(0.05), unplug(fds)), ())
    with pytest.raises(TransportError):
        transport.read(5, time.monotonic() + 0.3)


def test_read_returns_what_came_and_stops_at_the_deadline(pty_transport):
    transport, fds = pty_transport
    os.write(fds["master"], b"abc")
    start = time.monotonic()
    assert transport.read(5, start + 0.1) == b"abc"
    assert time.monotonic() - start >= 0.1


def test_missing_device_is_a_transport_error(tmp_path):
    with pytest.raises(TransportError, match="cannot open"):
        SerialTransport(str(tmp_path / "ttyUSB9"), COMSETS[2]).open()
