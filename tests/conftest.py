"""Test set-up: gevent first (as in the gateway), then shared fixtures."""

from gevent import monkey

monkey.patch_all()

import pytest  # noqa: E402

from tests.support import Gateway, Simulator  # noqa: E402


@pytest.fixture
def simulator(tmp_path):
    """Factory: start virtual meters on a pty; stopped after the test."""
    started = []

    def start(devices: str, *extra: str) -> Simulator:
        sim = Simulator(tmp_path / f"tty{len(started)}", devices, list(extra))
        started.append(sim)
        return sim.start()

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def gateway(tmp_path):
    """Factory: start sdm630_httpd on a free loopback port; stopped after the test."""
    started = []

    def start(link, devices: str, *extra: str, wait_values: bool = True) -> Gateway:
        gw = Gateway(str(link), devices, list(extra), log_path=tmp_path / f"httpd{len(started)}.log")
        started.append(gw)
        return gw.start(wait_values=wait_values)

    yield start
    for gw in started:
        gw.stop()
