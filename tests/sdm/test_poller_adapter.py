"""The bus loop when the adapter goes away and comes back: logged once, honest status, resumes alone."""

import logging

import gevent
import pytest

from sdm.hub import AVAILABLE, UNAVAILABLE
from sdm.poller import PollSettings
from sdm.transport import TransportError
from tests.fakes import MeterLine, bus_poller, virtual_meters
from tests.support import wait_until


class UnpluggableLine(MeterLine):
    """Fails like a pulled USB adapter while ``plugged`` is False."""

    plugged = True

    def open(self):
        if not self.plugged:
            raise TransportError("cannot open fake: no such device")
        super().open()

    def write(self, data):
        if not self.plugged:
            raise TransportError("fake: write failed: [Errno 5] Input/output error")
        super().write(data)


@pytest.fixture
def bus():
    devices = {1: "sdm630", 26: "janitza"}
    line = UnpluggableLine(virtual_meters(devices))
    hub, poller = bus_poller(devices, line, PollSettings(reopen_min=0.01, reopen_max=0.04))
    runner = gevent.spawn(poller.run)
    yield hub, line, poller
    poller.stop()
    runner.join(2)
    assert runner.dead and not line.is_open, "stop() ends the loop and closes the port"


def statuses(hub):
    return {meter.status for meter in hub.meters.values()}


def test_adapter_lost_is_logged_once_and_polling_resumes(bus, caplog):
    hub, line, _ = bus
    wait_until(lambda: all(m.complete_readings for m in hub.meters.values()), 5, what="first readings")
    caplog.set_level(logging.INFO, logger="sdm.poller")
    line.plugged = False
    wait_until(lambda: hub.buses["bus"].connected is False, 2, what="the bus to show disconnected")
    assert statuses(hub) == {UNAVAILABLE}
    gevent.sleep(0.3)                                   # several failed reopen attempts
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "adapter lost" in errors[0].getMessage()
    before = {slave: meter.complete_readings for slave, meter in hub.meters.items()}
    line.plugged = True
    wait_until(lambda: hub.buses["bus"].connected is True, 2, what="the bus to reconnect")
    wait_until(lambda: all(m.complete_readings > before[s] for s, m in hub.meters.items()), 5,
               what="full readings after the reconnect")
    assert statuses(hub) == {AVAILABLE}
    assert hub.buses["bus"].reconnects == 1
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_missing_adapter_at_start_is_logged_once(caplog):
    line = UnpluggableLine(virtual_meters({1: "sdm630"}))
    line.plugged = False
    hub, poller = bus_poller({1: "sdm"}, line, PollSettings(reopen_min=0.01, reopen_max=0.02))
    caplog.set_level(logging.INFO, logger="sdm.poller")
    runner = gevent.spawn(poller.run)
    gevent.sleep(0.2)
    poller.stop()
    runner.join(1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "bus bus: cannot open fake: no such device; retrying with back-off"]
    assert hub.buses["bus"].connected is False
