"""The gateway's configuration: one typed object, filled from a TOML file or from flags.

Every room reads its part of :class:`Config`; nothing else parses settings.
The file's sections and keys are a user contract (README "Configuration
file"): ``[http]``, ``[mqtt]``, ``[metrics]``, ``[[bus]]`` with
``[[bus.meter]]``.  Units are those of the equivalent flags: ``pause`` in
milliseconds, every other time in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from .meters.model import MeterModel

DEFAULT_NAME_FORMAT = "Instrument%d"
DEFAULT_BUS_NAME = "bus"       # the one bus of a gateway started with flags


@dataclass(frozen=True)
class MeterConfig:
    """One meter on one bus, as configured.  ``name`` is unique in the gateway (its UniqueId)."""

    device_id: int
    type_name: str                  # as configured, upper case: SDM, SDM630, JANITZA, ...
    model: MeterModel
    name: str
    bus: str = DEFAULT_BUS_NAME
    pause: Optional[float] = None   # seconds of quiet before its next request; None: the model's
    interval: float = 0.0           # least seconds between the starts of two readings
    slow: float = 0.0               # read the slow set only every this many seconds; 0: every cycle

    @property
    def unique_id(self) -> str:
        return self.name


@dataclass(frozen=True)
class BusConfig:
    """One bus: a port (serial path, ``rtu+tcp://host:port`` or ``tcp://host:port``) and its meters."""

    name: str
    port: str
    baud: int = 9600
    parity: str = "N"               # "N" or "E", 8 data bits and 1 stop bit either way
    timeout: float = 0.3            # seconds a meter may take to start its answer
    retries: int = 2
    max_failures: int = 5
    reprobe_max: float = 60.0
    meters: Tuple[MeterConfig, ...] = ()

    @property
    def kind(self) -> str:
        """``serial``, ``rtu+tcp`` or ``tcp``, from the port's form."""
        if self.port.startswith("rtu+tcp://"):
            return "rtu+tcp"
        if self.port.startswith("tcp://"):
            return "tcp"
        return "serial"


@dataclass(frozen=True)
class HttpConfig:
    listen: str = ":8080"
    max_ws_clients: int = 200
    max_long_polls: int = 200


@dataclass(frozen=True)
class MqttConfig:
    """MQTT publishing; ``broker`` empty means off.  Same meaning as the ``-b -t ...`` flags."""

    broker: str = ""
    topic: str = "sdm630"
    user: str = ""
    password: str = ""              # the file may leave it out: $SDM_MQTT_PASSWORD then
    client_id: str = "sdm630"
    qos: int = 0
    rate: float = 0.0
    clean: bool = False
    ca_file: Optional[str] = None
    per_value: bool = False
    queue: int = 1000
    backoff_max: float = 30.0
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"


@dataclass(frozen=True)
class MetricsConfig:
    bus_label: bool = True          # a ``bus`` label on every meter series (off for flag-started gateways)


@dataclass(frozen=True)
class Config:
    buses: Tuple[BusConfig, ...]
    http: HttpConfig = field(default_factory=HttpConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    verbose: bool = False
    source: str = "flags"           # the file's path when read from one (for messages and SIGHUP)

    @property
    def meters(self) -> Tuple[MeterConfig, ...]:
        return tuple(meter for bus in self.buses for meter in bus.meters)


def from_args(args) -> Config:
    """Placeholder until the file reader lands: the one-bus Config of today's flags."""
    from .meters.registry import lookup, parse_device_list
    from .mqtt import config_from_args
    from .schedule import schedules
    from .transport import comset

    devices = parse_device_list(args.device_list)
    if "%d" not in args.unique_id_format:
        raise ValueError("--unique_id_format must contain %d")
    pauses = {}
    for item in args.pause:
        keyword, sep, ms = item.partition("=")
        if not sep:
            raise ValueError(f"--pause {item!r} is not TYPE=MS")
        pauses[lookup(keyword).key] = float(ms) / 1000.0
    plan = schedules([slave for _, _, slave in devices], args.interval, args.slow)
    meters = tuple(
        MeterConfig(slave, type_name, model, args.unique_id_format % slave, DEFAULT_BUS_NAME,
                    pauses.get(model.key), plan[slave].interval, plan[slave].slow_interval)
        for type_name, model, slave in devices)
    line = comset(args.comset)
    bus = BusConfig(DEFAULT_BUS_NAME, args.serialadapter, line.baud, line.parity, args.timeout, args.retries,
                    args.max_failures, args.reprobe_max, meters)
    return Config((bus,), HttpConfig(args.url, args.max_ws_clients, args.max_long_polls),
                  config_from_args(args), MetricsConfig(bus_label=False), args.verbose)
