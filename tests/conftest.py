"""Test set-up: gevent first (as in the gateway), then shared fixtures."""

from gevent import monkey

monkey.patch_all()

import pytest  # noqa: E402

from tests.support import Gateway, Simulator  # noqa: E402


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path, monkeypatch):
    """Every test (and every process it starts) keeps its state in its own directory, never in
    the user's ~/.local/state: no test sees what another one learned."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


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


@pytest.fixture(scope="session")
def mosquitto_bin():
    """Debian's mosquitto (installed by `make prepare`)."""
    from tests.mqtt_support import require_mosquitto
    return require_mosquitto()


@pytest.fixture
def broker(mosquitto_bin, tmp_path):
    """Factory: mosquitto on a free loopback port (``start=False``: port chosen, not yet listening)."""
    from tests.mqtt_support import Broker
    started = []

    def make(start: bool = True, tls=None, extra_config: str = "") -> Broker:
        found = Broker(mosquitto_bin, tmp_path, tls, extra_config)
        started.append(found)
        return found.start() if start else found

    yield make
    for found in started:
        found.stop()


@pytest.fixture
def mqtt_subscriber():
    """Factory: a paho subscriber recording every message; closed after the test."""
    from tests.mqtt_support import Subscriber
    opened = []

    def make(port: int, topics=("#",), login=None) -> Subscriber:
        opened.append(Subscriber(port, topics, login=login))
        return opened[-1]

    yield make
    for sub in opened:
        sub.close()
