"""An in-process gateway without a bus: a hub we publish to by hand, served on loopback."""

from dataclasses import dataclass

import pytest

from sdm.api import make_app
from sdm.hub import Hub, MeterConfig
from sdm.meters.registry import lookup
from sdm.server import make_server
from sdm.streams import Streams
from sdm.streams.ws import WsSettings
from tests.support import Response, free_port, http_request


@dataclass
class Live:
    hub: Hub
    streams: Streams
    port: int

    def get(self, path: str, **kwargs) -> Response:
        return http_request(self.port, path, **kwargs)


@pytest.fixture
def live(request):
    """Meters 1 (SDM630) and 2 (SDM120); websocket settings by indirect parametrization."""
    settings = WsSettings(**getattr(request, "param", {}))
    hub = Hub([MeterConfig(1, "SDM630", lookup("sdm630"), "Instrument1"),
               MeterConfig(2, "SDM120", lookup("sdm120"), "Instrument2")])
    streams = Streams(hub, settings, status_interval=3600)
    port = free_port()
    server = make_server(streams.mount(make_app(hub)), f"127.0.0.1:{port}")
    server.start()
    yield Live(hub, streams, port)
    streams.stop()
    server.stop(timeout=1)


@pytest.fixture(autouse=True)
def every_line_logged(monkeypatch):
    """Each test sees its own log lines: the once-a-minute logs start afresh."""
    import logging

    from sdm import server
    from sdm.quietlog import RepeatLog
    from sdm.streams import ws
    monkeypatch.setattr(ws, "quiet", RepeatLog(logging.getLogger(ws.__name__)))
    monkeypatch.setattr(server, "quiet", RepeatLog(logging.getLogger(server.__name__)))
