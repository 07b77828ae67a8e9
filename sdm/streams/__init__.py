"""Live outputs fed by the hub: the websocket (/ws), the long-poll firehose
(/firehose) and the status ticker that publishes /status every second.

:func:`mount` adds both routes to the bottle app and starts what they need.
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


def mount(app: bottle.Bottle, hub: Hub, ws_settings: Optional[WsSettings] = None) -> bottle.Bottle:
    """Add /firehose and /ws to ``app`` and start the status ticker; returns ``app``."""
    Firehose(hub).mount(app)
    Broadcaster(hub, ws_settings or WsSettings()).mount(app)
    gevent.spawn(status_ticker, hub)
    return app
