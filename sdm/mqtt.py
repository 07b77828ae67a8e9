"""MQTT output: meter readings to a broker, with Home Assistant discovery.

Topics (``<base>`` is ``-t``, ``<meter>`` the meter's UniqueId made topic-safe):
``<base>/status`` online/offline (retained; offline is the last will),
``<base>/<meter>/availability`` online/offline (retained, follows the meter),
``<base>/<meter>/state`` the JSON of ``GET /last/{id}`` after every complete
reading, and with ``--mqtt-per-value`` ``<base>/<meter>/<IEC61850>`` per value.

The hub calls :meth:`MqttPublisher.on_event` in the poller's greenlet: it
only appends to a bounded queue (the oldest entry is dropped and counted when
it is full, e.g. while the broker is away).  A greenlet of its own turns the
queue into publishes while connected; paho's network loop runs in another and
reconnects with back-off.  It publishes the hub's checked values only, so energy
counters never go down on the wire (Home Assistant would book a drop as a meter
reset): sdm.sanity decides that for every output at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
import types
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Deque, Dict, Mapping, Optional, Union
from urllib.parse import urlsplit

import gevent
import gevent.event

from .config import MqttConfig
from .ha_discovery import OFFLINE, ONLINE, DiscoverySettings, config_filter, encoded_configs
from .hub import AVAILABLE, AvailabilityUpdate, Hub, MeterState, MeterUpdate
from .readings import dumps, readings
from .topics import Topics, check_base

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode


def _paho() -> types.ModuleType:
    """paho, imported only when MQTT is on: it costs ~60 ms of start-up before the first reading."""
    import paho.mqtt.client
    return paho.mqtt.client

log = logging.getLogger(__name__)

SCHEMES = {"tcp": False, "mqtt": False, "ssl": True, "tls": True, "mqtts": True}
OUTSTANDING_MAX = 100        # publishes handed to paho but not yet written/acknowledged
KEEPALIVE = 30


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'ssl' if self.tls else 'tcp'}://{self.host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """``tcp://host:1883``, ``ssl://host:8883``, ``host:port`` or ``host`` -> Broker (ValueError if bad)."""
    text = url.strip()
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"broker {url!r}: scheme must be one of {', '.join(sorted(SCHEMES))}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker {url!r}: bad port") from None
    if not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"broker {url!r} is not SCHEME://HOST[:PORT]")
    tls = SCHEMES[scheme]
    return Broker(parts.hostname, port or (8883 if tls else 1883), tls)


@dataclass(frozen=True)
class MqttSettings:
    broker: Broker
    base: str = "sdm630"
    client_id: str = "sdm630"
    user: str = ""
    password: str = ""
    qos: int = 0
    rate: float = 0.0               # minimum seconds between two publishes of one topic
    clean: bool = False
    ca_file: Optional[str] = None
    per_value: bool = False
    queue_size: int = 1000
    backoff_max: float = 30.0
    ha_prefix: Optional[str] = None   # None: no Home Assistant discovery


def add_mqtt_flags(parser: argparse.ArgumentParser) -> None:
    mqtt = parser.add_argument_group("MQTT (off unless --broker is given)")
    mqtt.add_argument("-b", "--broker", default="",
                      help="broker URL, e.g. tcp://127.0.0.1:1883 or ssl://host:8883; empty = no MQTT")
    mqtt.add_argument("-t", "--topic", default="sdm630", help="base topic (default: %(default)s)")
    mqtt.add_argument("--user", default="", help="broker user name")
    mqtt.add_argument("--password", default=os.environ.get("SDM_MQTT_PASSWORD", ""),
                      help="broker password (default: $SDM_MQTT_PASSWORD, which keeps it out of ps)")
    mqtt.add_argument("-i", "--clientid", default="sdm630",
                      help="client id; give each gateway on one broker its own (default: %(default)s)")
    mqtt.add_argument("-q", "--qos", type=int, default=0, choices=(0, 1, 2), help="QoS (default: %(default)s)")
    mqtt.add_argument("-r", "--rate", type=float, default=None,
                      help="minimum seconds between two publishes of one topic; 0 = every reading "
                           "(default: 0, or 30 with --ha-discovery, which a recorder can live with)")
    mqtt.add_argument("-l", "--clean", action="store_true", help="clean session")
    mqtt.add_argument("--mqtt-ca", default=None, metavar="FILE",
                      help="CA certificate file for ssl:// (default: the system's CAs)")
    mqtt.add_argument("--mqtt-per-value", action="store_true",
                      help="also publish every value on <topic>/<meter>/<IEC61850>")
    mqtt.add_argument("--mqtt-queue", type=int, default=1000, metavar="N",
                      help="updates kept while the broker is away; the oldest go first (default: %(default)s)")
    mqtt.add_argument("--mqtt-backoff-max", type=float, default=30.0, metavar="S",
                      help="longest wait between reconnect attempts (default: %(default)s)")
    mqtt.add_argument("--ha-discovery", action="store_true",
                      help="announce every meter to Home Assistant (MQTT discovery)")
    mqtt.add_argument("--ha-prefix", default="homeassistant",
                      help="Home Assistant's discovery prefix (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> MqttConfig:
    """The MQTT part of the configuration from the flags of :func:`add_mqtt_flags`."""
    return MqttConfig(
        broker=args.broker, topic=args.topic, user=args.user, password=args.password,
        client_id=args.clientid, qos=args.qos, rate=args.rate, clean=args.clean, ca_file=args.mqtt_ca,
        per_value=args.mqtt_per_value, queue=args.mqtt_queue, backoff_max=args.mqtt_backoff_max,
        ha_discovery=args.ha_discovery, ha_prefix=args.ha_prefix)


def settings_from_config(config: MqttConfig) -> Optional[MqttSettings]:
    """MqttSettings from the configuration, None when MQTT is off; ValueError for bad values
    (named as their flags, which users of a file also find in docs/config.md)."""
    if not config.broker:
        return None
    if config.rate is not None and config.rate < 0:
        raise ValueError("--rate must be 0 or more seconds")
    if config.queue < 1:
        raise ValueError("--mqtt-queue must be at least 1")
    if config.backoff_max < 1:
        raise ValueError("--mqtt-backoff-max must be at least 1 second")
    if config.ca_file and not os.path.isfile(config.ca_file):
        raise ValueError(f"--mqtt-ca {config.ca_file!r} is not a file")
    return MqttSettings(
        broker=parse_broker(config.broker), base=check_base(config.topic), client_id=config.client_id,
        user=config.user, password=config.password, qos=config.qos, rate=publish_rate(config), clean=config.clean,
        ca_file=config.ca_file, per_value=config.per_value, queue_size=config.queue,
        backoff_max=config.backoff_max,
        ha_prefix=check_base(config.ha_prefix) if config.ha_discovery else None)


# With Home Assistant discovery every value of a state message is an entity, and HA's recorder
# writes a row for each entity whose value changed: a three-meter bus publishing every reading
# (several a second) makes hundreds of rows a second.  Its graphs and long-term statistics (5 min,
# 1 h) need far less: one state every 30 s keeps such a bus at about five rows a second.  Energy
# counters lose nothing (a state carries the newest value); `-r 0` / `rate = 0` keeps every reading.
HA_RATE = 30.0


def publish_rate(config: MqttConfig) -> float:
    """Least seconds between two publishes of one topic: as configured, else HA_RATE with
    discovery and every reading (0) without."""
    if config.rate is not None:
        return config.rate
    return HA_RATE if config.ha_discovery else 0.0


def settings_from_args(args: argparse.Namespace) -> Optional[MqttSettings]:
    return settings_from_config(config_from_args(args))


@dataclass(frozen=True)
class SendValues:
    """Publish each value of one read on its own topic (--mqtt-per-value)."""

    name: str
    values: Mapping[str, Optional[float]]


@dataclass(frozen=True)
class SendState:
    """Publish the meter's whole reading, as taken when its cycle completed (the queue may lag)."""

    name: str
    values: Mapping[str, Optional[float]]
    timestamp: float


@dataclass(frozen=True)
class SendAvailability:
    """Publish the meter's availability if it changed; read from the hub when sent."""

    name: str


# What the hub's subscriber hands the publisher greenlet through the queue.
Outgoing = Union[SendValues, SendState, SendAvailability]


def start_mqtt(hub: Hub, config: MqttConfig) -> Optional[MqttPublisher]:
    """Start publishing the hub when a broker is configured (ValueError for bad settings)."""
    settings = settings_from_config(config)
    if settings is None:
        return None
    publisher = MqttPublisher(hub, settings)
    publisher.start()
    return publisher


def _no_delay(client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
    """Small publishes go out at once: with Nagle on, each may wait ~40 ms for the broker's delayed ACK.

    paho types the socket loosely (it could be a websocket wrapper); tcp:// and ssl:// give a real one.
    """
    if not isinstance(sock, socket.socket):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class MqttPublisher:
    """Publishes hub updates to one broker; reconnects for as long as the gateway runs."""

    def __init__(self, hub: Hub, settings: MqttSettings):
        self.hub = hub
        self.settings = settings
        self.topics = Topics(settings.base)
        self.counters: Dict[str, int] = {"Connected": False, "Reconnects": 0, "Published": 0, "Dropped": 0}
        self.queue: Deque[Outgoing] = deque()
        self._wake = gevent.event.Event()
        self._resync = False
        self._ever_connected = False
        self._outage_logged = False
        self._stopping = False
        self._outstanding: Deque[paho.MQTTMessageInfo] = deque()
        self._availability: Dict[str, str] = {}
        self._last_sent: Dict[str, float] = {}
        self.discovery: Optional[DiscoverySettings] = None
        self.configs: Dict[str, bytes] = {}
        if settings.ha_prefix:
            self.discovery = DiscoverySettings(settings.ha_prefix, settings.client_id, self.topics)
            self.configs = encoded_configs([m.config for m in hub.meters.values()], self.discovery)
        self.client = self._make_client()
        self._worker: Optional[gevent.Greenlet] = None

    def _make_client(self) -> paho.Client:
        s = self.settings
        library = _paho()
        client: paho.Client = library.Client(library.CallbackAPIVersion.VERSION2, client_id=s.client_id,
                                             clean_session=s.clean)
        if s.user:
            client.username_pw_set(s.user, s.password or None)
        if s.broker.tls:
            client.tls_set(ca_certs=s.ca_file)
        client.will_set(self.topics.status, OFFLINE, qos=s.qos, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(s.backoff_max)))
        client.max_queued_messages_set(s.queue_size)
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # -- lifecycle (main greenlet) ----------------------------------------------
    def start(self) -> None:
        self.hub.add_section("Mqtt", lambda: self.counters)
        self.hub.subscribe(self.on_event)
        log.info("mqtt: publishing to %s under %s/", self.settings.broker, self.settings.base)
        self.client.connect_async(self.settings.broker.host, self.settings.broker.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        self._worker = gevent.spawn(self._run)

    def stop(self, timeout: float = 1.0) -> None:
        """Say offline (a clean disconnect sends no last will), then disconnect."""
        self._stopping = True
        self.hub.unsubscribe(self.on_event)
        if self._worker is not None:
            self._worker.kill()
        if self.counters["Connected"]:
            info = self.client.publish(self.topics.status, OFFLINE, qos=self.settings.qos, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # -- hub subscriber (poller greenlet): enqueue only ---------------------------
    def on_event(self, event: object) -> None:
        if isinstance(event, MeterUpdate):
            if self.settings.per_value:
                self._enqueue(SendValues(event.name, event.values))
            if event.complete:
                meter = self.hub.meters[event.name]
                self._enqueue(SendState(event.name, dict(meter.values), meter.timestamp))
        elif isinstance(event, AvailabilityUpdate):
            self._enqueue(SendAvailability(event.name))

    def _enqueue(self, item: Outgoing) -> None:
        if len(self.queue) >= self.settings.queue_size:
            self.queue.popleft()
            self.counters["Dropped"] += 1
        self.queue.append(item)
        self._wake.set()

    # -- paho callbacks (paho's network greenlet) --------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, reason_code: ReasonCode,
                    properties: Optional[Properties]) -> None:
        if reason_code.is_failure:
            self._log_outage(f"broker {self.settings.broker} refused the connection: {reason_code}")
            return
        if self._ever_connected:
            self.counters["Reconnects"] += 1
        log.info("mqtt: connected to %s as %s%s", self.settings.broker, self.settings.client_id,
                 " again" if self._ever_connected else "")
        self._ever_connected = True
        self._outage_logged = False
        self.counters["Connected"] = True
        if self.discovery:
            client.subscribe(f"{self.discovery.prefix}/status", qos=self.settings.qos)
            client.subscribe(config_filter(self.discovery), qos=self.settings.qos)
        self._resync = True
        self._wake.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._log_outage(f"broker {self.settings.broker} not reachable")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
                       reason_code: ReasonCode, properties: Optional[Properties]) -> None:
        was_connected = self.counters["Connected"]
        self.counters["Connected"] = False
        self._forget_outstanding()
        if was_connected and not self._stopping:
            self._log_outage(f"connection to {self.settings.broker} lost ({reason_code})")

    def _log_outage(self, what: str) -> None:
        """One log line per outage, not one per attempt."""
        if not self._outage_logged:
            log.warning("mqtt: %s; readings go on, reconnecting with back-off (up to %g s)",
                        what, self.settings.backoff_max)
            self._outage_logged = True

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        self.counters["Published"] += 1

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self.discovery is None:
            return
        if message.topic == f"{self.discovery.prefix}/status":
            if message.payload == ONLINE.encode() and not message.retain:
                log.info("mqtt: Home Assistant is online; sending discovery again")
                self._resync = True
                self._wake.set()
        elif message.payload and message.topic not in self.configs:
            log.info("mqtt: clearing the discovery config %s of a meter or value no longer configured",
                     message.topic)
            self._publish(message.topic, b"", retain=True)

    # -- publisher greenlet --------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self.counters["Connected"] and (self._resync or self.queue):
                if not self._room():
                    gevent.sleep(0.01)
                    continue
                try:
                    if self._resync:
                        self._resync = False
                        self._announce()
                    else:
                        self._send(self.queue.popleft())
                except Exception:   # one bad message must not end MQTT for the gateway's lifetime
                    log.exception("mqtt: publishing failed; going on with the next update")
                    self.counters["Dropped"] += 1
            gevent.sleep(0)

    def _room(self) -> bool:
        """True when paho has room for more; keeps its buffers bounded too."""
        while self._outstanding and self._outstanding[0].is_published():
            self._outstanding.popleft()
        return len(self._outstanding) < OUTSTANDING_MAX

    def _forget_outstanding(self) -> None:
        lost = sum(1 for info in self._outstanding if not info.is_published())
        if self.settings.qos == 0:
            self.counters["Dropped"] += lost
        self._outstanding.clear()

    def _announce(self) -> None:
        """Everything retained, after a (re)connect or HA's restart: status, discovery, availability."""
        self._publish(self.topics.status, ONLINE.encode(), retain=True)
        for topic, payload in self.configs.items():
            self._publish(topic, payload, retain=True)
        self._availability.clear()
        for meter in self.hub.meters.values():
            self._send_availability(meter)

    def _send(self, item: Outgoing) -> None:
        meter = self.hub.meters[item.name]
        if isinstance(item, SendValues):
            self._send_values(meter, item.values)
        elif isinstance(item, SendState):
            self._send_availability(meter)
            self._send_state(meter, item.values, item.timestamp)
        else:
            self._send_availability(meter)

    def _send_availability(self, meter: MeterState) -> None:
        status = ONLINE if meter.status == AVAILABLE and meter.last_good else OFFLINE
        if self._availability.get(meter.name) != status:
            self._availability[meter.name] = status
            self._publish(self.topics.availability(meter.config.unique_id), status.encode(), retain=True)

    def _send_state(self, meter: MeterState, values: Mapping[str, Optional[float]], timestamp: float) -> None:
        topic = self.topics.state(meter.config.unique_id)
        if self._rate_limited(topic):
            return
        self._publish(topic, dumps(readings(meter.config.unique_id, meter.device_id, timestamp, values))[:-1])

    def _send_values(self, meter: MeterState, values: Mapping[str, Optional[float]]) -> None:
        for name, value in values.items():
            topic = self.topics.value(meter.config.unique_id, name)
            if value is not None and not self._rate_limited(topic):
                self._publish(topic, b"%.3f" % value)

    def _rate_limited(self, topic: str) -> bool:
        if not self.settings.rate:
            return False
        now = time.monotonic()
        if now - self._last_sent.get(topic, -self.settings.rate) < self.settings.rate:
            return True
        self._last_sent[topic] = now
        return False

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=self.settings.qos, retain=retain)
        if info.rc == _paho().MQTT_ERR_SUCCESS:
            self._outstanding.append(info)
        else:
            self.counters["Dropped"] += 1

