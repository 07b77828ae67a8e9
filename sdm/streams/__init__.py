"""Live outputs fed by the hub: the websocket (/ws), the long-poll firehose
(/firehose) and the status ticker that publishes /status every second.
"""

from __future__ import annotations

import logging
from typing import Optional

import bottle
import gevent

from ..hub import Hub
from ..status import status
from .firehose import Firehose
from .ws import Broadcaster, WsSettings

log = logging.getLogger(__name__)

STATUS_INTERVAL = 1.0


def status_ticker(hub: Hub, interval: float = STATUS_INTERVAL) -> None:
    """Publish the /status object to the hub's subscribers every ``interval`` s."""
    while True:
        gevent.sleep(interval)
        try:
            hub.publish_status(status(hub))
        except Exception:   # a broken snapshot must not end the ticker
            log.exception("status update failed")


class Streams:
    """The firehose, the websocket broadcaster and the status ticker of one hub."""

    def __init__(self, hub: Hub, ws_settings: Optional[WsSettings] = None,
                 status_interval: float = STATUS_INTERVAL, max_long_polls: int = 200,
                 long_polls_per_address: int = 10):
        self.hub = hub
        self.firehose = Firehose(hub, max_waiting=max_long_polls, per_address=long_polls_per_address)
        self.broadcaster = Broadcaster(hub, ws_settings)
        self.ticker = gevent.spawn(status_ticker, hub, status_interval)

    def mount(self, app: bottle.Bottle) -> bottle.Bottle:
        self.firehose.mount(app)
        self.broadcaster.mount(app)
        return app

    def stop(self) -> None:
        """End every stream cleanly: long polls answered, websockets closed with 1001."""
        self.ticker.kill()
        self.firehose.close()
        self.broadcaster.stop()
        self.hub.unsubscribe(self.firehose.on_event)
