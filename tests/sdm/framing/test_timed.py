"""The turnaround a link measures: end of the request to the first byte of the reply."""

import time

import pytest

from sdm.framing import rtu
from sdm.framing.rtu import RtuLink
from tests.fakes import MeterLine, virtual_meters


class SlowLine(MeterLine):
    """A meter line whose reply begins ``delay`` s after the request has been sent."""

    def __init__(self, meters, delay):
        super().__init__(meters)
        self.delay = delay
        self.sent = 0.0

    def write(self, data):
        super().write(data)
        self.sent = time.monotonic() + len(data) * self.char_time

    def read(self, size, deadline):
        wait = self.sent + self.delay - time.monotonic()
        if self.pending and wait > 0:
            if time.monotonic() + wait > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return b""
            time.sleep(wait)
        return super().read(size, deadline)


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.08])
def test_rtu_link_measures_the_turnaround(delay):
    line = SlowLine(virtual_meters({1: "sdm120"}), delay)
    link = RtuLink(line)
    link.exchange(1, 4, 0, 2, timeout=0.3)
    assert delay - 0.002 <= link.turnaround <= delay + 0.02


def test_no_reply_has_no_turnaround():
    link = RtuLink(SlowLine(virtual_meters({1: "sdm120"}), 0.01))
    link.exchange(1, 4, 0, 2, timeout=0.3)
    with pytest.raises(rtu.NoReply):
        link.exchange(5, 4, 0, 2, timeout=0.05)
    assert link.turnaround is None
