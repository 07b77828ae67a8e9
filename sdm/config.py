"""The gateway's configuration: one typed object, filled from a TOML file or from flags.

Every room reads its part of :class:`Config`; nothing else parses settings.
The file's sections and keys are a user contract (docs/config.md):
``[http]``, ``[mqtt]``, ``[metrics]``, ``[[bus]]`` with ``[[bus.meter]]``.
Units are those of the equivalent flags: ``pause`` in milliseconds, every
other time in seconds.

:func:`load` reads a file, :func:`from_args` the flags of ``sdm630_httpd``,
:func:`to_toml` writes the file equivalent to either.  A setting is checked
once, by the same check for the file and the flags, and a bad one stops the
start: :func:`load` returns a whole valid Config or raises :class:`ConfigError`.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, List, NoReturn, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .meters.model import MeterModel
from .meters.registry import MAX_SLAVE_ID, lookup, parse_device_list
from .schedule import DEFAULT_SLOW_INTERVAL, parse_seconds, schedules
from .topics import check_base
from .transport import COMSETS, Comset, comset

if sys.version_info >= (3, 11):
    import tomllib
else:   # pragma: no cover - the backport has the same interface
    import tomli as tomllib

DEFAULT_NAME_FORMAT = "Instrument%d"
DEFAULT_BUS_NAME = "bus"       # the one bus of a gateway started with flags
DEFAULT_TCP_PORT = 502
DEFAULT_COMSET = 2             # 9600 8N1, as -c and BusConfig
POLL, LISTEN, AUTO = "poll", "listen", "auto"
BUS_MODES = (POLL, LISTEN, AUTO)
DENY, FORWARD = "deny", "forward"
DEFAULT_SERVE_PORT = 502
PASSWORD_VARIABLE = "SDM_MQTT_PASSWORD"


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
    max_current: Optional[float] = None   # A per phase; None: the model's (a CT meter needs its own)

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
    mode: str = POLL                # poll (sdm is the master), listen (never transmit) or auto
    takeover_after: float = 10.0    # auto: seconds without a foreign request before sdm polls

    @property
    def kind(self) -> str:
        """``serial``, ``rtu+tcp`` or ``tcp``, from the port's form."""
        if self.port.startswith("rtu+tcp://"):
            return "rtu+tcp"
        if self.port.startswith("tcp://"):
            return "tcp"
        return "serial"


@dataclass(frozen=True)
class ServeUnit:
    """A served MODBUS id and the configured meter whose cached registers it answers with."""

    id: int
    meter: str


@dataclass(frozen=True)
class ServeConfig:
    """One place the meters are served as MODBUS slaves from the register cache (sdm/serve.py):
    a Modbus TCP server (``listen``) or an RTU slave on a serial port of its own (``port``)."""

    listen: str = ""                # HOST:PORT of a Modbus TCP server (loopback unless a host is given)
    port: str = ""                  # or the serial device of an RTU slave
    baud: int = 9600
    parity: str = "N"
    max_age: float = 2.0            # seconds; older registers are not served
    writes: str = DENY              # deny, or forward to the real meter through its bus
    max_connections: int = 16       # Modbus TCP clients at a time
    idle_timeout: float = 60.0      # a TCP client silent this long is disconnected
    units: Tuple[ServeUnit, ...] = ()   # empty: every meter under its own id

    @property
    def where(self) -> str:
        return f"tcp {self.listen}" if self.listen else f"rtu {self.port}"


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP side and its limits (README "Hostile clients"); the caps of websockets and long
    polls fit inside ``max_connections``, which stays well under the process's file limit."""

    listen: str = ":8080"
    max_ws_clients: int = 200
    max_long_polls: int = 200
    max_connections: int = 512          # open HTTP connections at a time, streams included
    ws_per_address: int = 10            # websockets of one client address at a time
    long_polls_per_address: int = 10    # waiting /firehose requests of one client address
    head_timeout: float = 10.0          # s from a request's first byte to the end of its head
    cors: str = "*"                     # Access-Control-Allow-Origin on REST answers; "" sends none
    ws_origins: Tuple[str, ...] = ()    # Origins besides the gateway's own that may open /ws ("*": any)


@dataclass(frozen=True)
class MqttConfig:
    """MQTT publishing; ``broker`` empty means off.  Same meaning as the ``-b -t ...`` flags."""

    broker: str = ""
    topic: str = "sdm630"
    user: str = ""
    password: str = ""              # the file may leave it out: $SDM_MQTT_PASSWORD then
    client_id: str = "sdm630"
    qos: int = 0
    rate: Optional[float] = None    # None: 0 (every reading), HA_RATE with Home Assistant discovery
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
class CountersConfig:
    """The energy-counter rules' numbers (sdm.sanity.CounterPolicy; reasons in docs/counters.md)."""

    confirm_readings: int = 5       # N: consistent readings before a reset or step is believed
    confirm_seconds: float = 60.0   # T: ... spanning at least this long
    first_readings: int = 1         # readings before a counter's very first value is published


@dataclass(frozen=True)
class Config:
    buses: Tuple[BusConfig, ...]
    http: HttpConfig = field(default_factory=HttpConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    counters: CountersConfig = field(default_factory=CountersConfig)
    state_dir: Optional[str] = None   # None: $STATE_DIRECTORY, $XDG_STATE_HOME/sdm, ~/.local/state/sdm
    serve: Tuple[ServeConfig, ...] = ()
    verbose: bool = False
    source: str = "flags"           # the file's path when read from one (for messages and SIGHUP)
    name_format: str = DEFAULT_NAME_FORMAT   # a meter's default name, %d = its id (-f)

    @property
    def meters(self) -> Tuple[MeterConfig, ...]:
        return tuple(meter for bus in self.buses for meter in bus.meters)


class ConfigError(ValueError):
    """A configuration the gateway must not start with; the message names file, line and key."""


# -- checks shared by the file and the flags -------------------------------------------------------

class Unfit(ValueError):
    """A value that does not fit its setting: ``expected`` says what would, ``detail`` why not."""

    def __init__(self, expected: str, detail: str = ""):
        super().__init__(expected)
        self.expected = expected
        self.detail = detail


Check = Callable[[Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)   # TOML's true is no number


def integer(low: int, high: Optional[int] = None) -> Check:
    """An integer ``low``..``high`` (no upper bound when ``high`` is None)."""
    expected = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

    def check(value: Any) -> int:
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise Unfit(expected)
        return value
    return check


def number(low: float, inclusive: bool = True, unit: str = "seconds") -> Check:
    """A finite number (an integer is taken as a float) >= ``low``, or > ``low``."""
    expected = f"a number of {unit} {'>=' if inclusive else '>'} {low:g}"

    def check(value: Any) -> float:
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            raise Unfit(expected)
        if value < low or (value == low and not inclusive):
            raise Unfit(expected)
        return float(value)
    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Unfit("true or false")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Unfit("a string")
    return value


def directory_path(value: Any) -> str:
    """A directory path (the state directory); ``~`` is expanded when it is used."""
    text = string(value)
    if not text.strip() or "\0" in text:
        raise Unfit("a directory path")
    return text


def _checked_by(check: Callable[[str], Any], expected: str) -> Check:
    """A string check out of a function that raises ValueError with its own reason."""
    def adopted(value: Any) -> Any:
        text = string(value)
        try:
            check(text)
        except ValueError as err:
            raise Unfit(expected, str(err)) from None
        return text
    return adopted


def _listen(text: str) -> None:
    from .server import parse_listen  # imported here: sdm.server pulls in gevent and bottle
    parse_listen(text)


def _broker(text: str) -> None:
    from .mqtt import parse_broker  # imported here: sdm.mqtt imports the hub, which is to import this module
    if text:
        parse_broker(text)


def _ca_file(value: Any) -> str:
    text = string(value)
    if not os.path.isfile(text):
        raise Unfit("the path of a CA certificate file", f"{text!r} is not a file")
    return text


def name_format(value: Any) -> str:
    """A format with exactly one ``%d`` (and ``%%`` for a percent sign) that gives a valid name."""
    text = string(value)
    expected = 'a name format with one %d, e.g. "Instrument%d"'
    if "%d" not in text:
        raise Unfit(expected, "the format must contain %d")
    try:
        name = text % 1
    except (TypeError, ValueError) as err:
        raise Unfit(expected, f"it does not format: {err}") from None
    meter_name(name)
    return text


def default_name(format_text: str, device_id: int) -> str:
    """A meter's name when it has none of its own (gosdm630's -f)."""
    return format_text % device_id


def meter_name(value: Any) -> str:
    """A name usable as UniqueId, in /last/{name} and in MQTT topics: not blank, no '/' or control characters."""
    text = string(value)
    expected = "a name that is not blank and has no '/' or control characters"
    if not text.strip() or "/" in text or any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise Unfit(expected)
    return text


def bus_name(value: Any) -> str:
    text = meter_name(value)
    if text.strip().isdigit():
        raise Unfit("a bus name that is not all digits")
    return text


def parity(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in ("N", "E"):
        raise Unfit('"N" (none) or "E" (even)')
    return value.upper()


def comset_number(value: Any) -> int:
    return integer(1, max(COMSETS))(value)


@dataclass(frozen=True)
class PortAddress:
    """Where a bus's port points: a serial device, or a TCP host and port."""

    kind: str                   # "serial", "rtu+tcp" or "tcp"
    device: str = ""            # serial: the device path as configured
    host: str = ""              # TCP: host name or address (IPv6 without brackets)
    port: int = 0               # TCP: port number

    @property
    def key(self) -> Tuple[str, Any]:
        """What two buses must not share: the real device file, or the host and port."""
        if self.kind == "serial":
            return ("serial", os.path.realpath(self.device))
        return ("tcp", (self.host.lower(), self.port))


PORT_FORMS = "a serial device path, rtu+tcp://HOST:PORT or tcp://HOST[:PORT]"
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$")


def parse_port(text: str) -> PortAddress:
    """A bus's ``port`` -> PortAddress; ValueError names what is wrong.

    ``tcp://`` defaults to port 502 (Modbus TCP's); ``rtu+tcp://`` has no
    standard port (gateways use 4196, 8899, 502, ...), so it must be given.
    """
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise ValueError("the port is empty")
    scheme, sep, _ = text.partition("://")
    if not sep:
        return PortAddress("serial", device=text)
    if scheme not in ("rtu+tcp", "tcp"):
        raise ValueError(f"unknown scheme {scheme!r}")
    parts = urlsplit(text)
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or "?" in text or "#" in text:
        raise ValueError("only HOST and PORT may follow the scheme")
    host = _tcp_host(parts.netloc)
    port = _tcp_port(parts, scheme)
    return PortAddress(scheme, host=host, port=port)


def _tcp_host(netloc: str) -> str:
    if netloc.startswith("["):
        literal, closed, _ = netloc[1:].partition("]")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise ValueError(f"{literal!r} is not an IPv6 address") from None
        if not closed:
            raise ValueError("an IPv6 address needs its closing ']'")
        return literal
    host = netloc.rpartition(":")[0] if ":" in netloc else netloc
    if not host:
        raise ValueError("the host is missing")
    if ":" in host:
        raise ValueError("an IPv6 address must be written in brackets, e.g. tcp://[fd00::5]:502")
    if not _HOST_NAME.match(host):
        raise ValueError(f"{host!r} is not a host name or address")
    return host


def _tcp_port(parts: Any, scheme: str) -> int:
    after_host = parts.netloc.rpartition("]")[2] if parts.netloc.startswith("[") else parts.netloc
    if ":" not in after_host:
        if scheme == "rtu+tcp":
            raise ValueError("rtu+tcp:// needs a port (the gateway's, e.g. 8899 or 4196)")
        return DEFAULT_TCP_PORT
    digits = after_host.rpartition(":")[2]
    if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= 65535:
        raise ValueError(f"port {digits!r} is not a number 1-65535")
    return int(digits)


def port_text(value: Any) -> str:
    text = string(value)
    try:
        parse_port(text)
    except ValueError as err:
        raise Unfit(PORT_FORMS, str(err)) from None
    return text


def meter_type(value: Any) -> Tuple[str, MeterModel]:
    text = string(value)
    try:
        return text.strip().upper(), lookup(text)
    except ValueError as err:
        raise Unfit("a meter type", str(err)) from None


def slow_interval(value: Any) -> float:
    """``true``: the default slow interval; ``false``: off; or seconds > 0."""
    if value is True:
        return DEFAULT_SLOW_INTERVAL
    if value is False:
        return 0.0
    try:
        return number(0, inclusive=False)(value)
    except Unfit:
        raise Unfit(f"a number of seconds > 0, or true ({DEFAULT_SLOW_INTERVAL:g} s)") from None


max_current = number(0, inclusive=False, unit="amperes")


def pause_ms(value: Any) -> float:
    """Milliseconds in the file and on --pause; seconds in MeterConfig."""
    return number(0, unit="milliseconds")(value) / 1000.0


def web_origin(text: str) -> str:
    """A browser's Origin: ``scheme://host[:port]`` exactly as a browser sends it, or ``*`` (any)."""
    if text == "*":
        return text
    parts = urlsplit(text)
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query
            or parts.fragment or "@" in parts.netloc or text != f"{parts.scheme}://{parts.netloc}"
            or text != text.lower()):
        raise ValueError(f"{text!r} is not an origin such as \"http://dashboard.lan:3000\" (lower case, "
                         "no path)")
    return text


def origins(value: Any) -> Tuple[str, ...]:
    expected = 'an array of origins such as ["http://dashboard.lan:3000"], or ["*"]'
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Unfit(expected)
    try:
        return tuple(web_origin(item) for item in value)
    except ValueError as err:
        raise Unfit(expected, str(err)) from None


def cors_origin(value: Any) -> str:
    text = string(value)
    if text:
        try:
            web_origin(text)
        except ValueError as err:
            raise Unfit('"*", "" (no CORS header) or one origin such as "http://dashboard.lan:3000"',
                        str(err)) from None
    return text


def check_http_caps(http: HttpConfig) -> None:
    """ValueError unless the stream caps fit inside the connection cap."""
    if http.max_ws_clients + http.max_long_polls > http.max_connections:
        raise ValueError(f"max_ws_clients + max_long_polls ({http.max_ws_clients} + {http.max_long_polls}) "
                         f"must fit inside max_connections ({http.max_connections})")


def serve_address(text: str) -> Tuple[str, int]:
    """A Modbus TCP server's ``listen``: ``HOST:PORT``, ``[IPv6]:PORT``, or ``:PORT`` for loopback.

    The served registers need no password to read (MODBUS has none), so an
    address without a host binds 127.0.0.1, never every interface.
    """
    host, sep, digits = text.strip().rpartition(":")
    if not sep:
        raise ValueError("no port: write HOST:PORT or :PORT")
    if not (digits.isascii() and digits.isdigit()) or not 0 <= int(digits) <= 65535:
        raise ValueError(f"port {digits!r} is not a number 0-65535")
    host = host.strip()
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("an IPv6 address needs its closing ']'")
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 address must be written in brackets, e.g. [::1]:5020")
    elif host and not _HOST_NAME.match(host):
        raise ValueError(f"{host!r} is not a host name or address")
    return host or "127.0.0.1", int(digits)


def bus_mode(value: Any) -> str:
    if value not in BUS_MODES:
        raise Unfit('"poll", "listen" or "auto"')
    return value


def write_rule(value: Any) -> str:
    if value not in (DENY, FORWARD):
        raise Unfit('"deny" or "forward"')
    return value


def serial_port(value: Any) -> str:
    text = port_text(value)
    if parse_port(text).kind != "serial":
        raise Unfit("a serial device path (an RTU slave needs an RS485 adapter of its own)")
    return text


# The checks of each section's keys; the defaults are the dataclasses'.
HTTP_KEYS: Dict[str, Check] = {
    "listen": _checked_by(_listen, "an address such as \":8080\", \"127.0.0.1:8080\" or \"[::1]:8080\""),
    "max_ws_clients": integer(0),
    "max_long_polls": integer(0),
    "max_connections": integer(1),
    "ws_per_address": integer(1),
    "long_polls_per_address": integer(1),
    "head_timeout": number(0, inclusive=False),
    "cors": cors_origin,
    "ws_origins": origins,
}
MQTT_KEYS: Dict[str, Check] = {
    "broker": _checked_by(_broker, "a broker URL such as tcp://HOST:1883 or ssl://HOST:8883, or \"\""),
    "topic": _checked_by(check_base, "an MQTT base topic"),
    "user": string,
    "password": string,
    "client_id": string,
    "qos": integer(0, 2),
    "rate": number(0),
    "clean": boolean,
    "ca_file": _ca_file,
    "per_value": boolean,
    "queue": integer(1),
    "backoff_max": number(1),
    "ha_discovery": boolean,
    "ha_prefix": _checked_by(check_base, "an MQTT topic prefix"),
}
METRICS_KEYS: Dict[str, Check] = {"bus_label": boolean}
COUNTERS_KEYS: Dict[str, Check] = {
    "confirm_readings": integer(2),
    "confirm_seconds": number(0),
    "first_readings": integer(1),
}
BUS_LIMITS: Dict[str, Check] = {
    "timeout": number(0, inclusive=False),
    "retries": integer(0),
    "max_failures": integer(1),
    "reprobe_max": number(0, inclusive=False),
}
BUS_MODE_KEYS: Dict[str, Check] = {"mode": bus_mode, "takeover_after": number(0, inclusive=False)}
BUS_KEYS = ("name", "port", "comset", "baud", "parity", *BUS_LIMITS, *BUS_MODE_KEYS, "meter")
METER_KEYS = ("type", "id", "name", "pause", "interval", "slow", "max_current")
SERVE_LIMITS: Dict[str, Check] = {
    "max_age": number(0, inclusive=False),
    "writes": write_rule,
    "max_connections": integer(1),
    "idle_timeout": number(0, inclusive=False),
}
SERVE_KEYS = ("listen", "port", "comset", "baud", "parity", *SERVE_LIMITS, "unit")
UNIT_KEYS = ("id", "meter")
TOP_KEYS = ("name_format", "verbose", "state_dir", "http", "mqtt", "metrics", "counters", "bus", "serve")


# -- where a key is written in the file ------------------------------------------------------------

Path = Tuple[Any, ...]      # ("bus", 2, "meter", 1): 1-based indices of arrays of tables


def path_text(path: Path) -> str:
    """``bus[2].meter[1].id`` for ("bus", 2, "meter", 1, "id")."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_HEADER = re.compile(r"^\s*(\[\[|\[)\s*([^\[\]]+?)\s*(\]\]|\])\s*(#.*)?$")
_MULTILINE = re.compile(r"""^\s*(\"{3}|'{3})(.*)$""")
_KEY = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


class Locator:
    """Lines of table headers and ``key =`` lines in the raw text (tomllib gives none).

    Good enough for the usual layouts: one header or key per line, dotted
    keys and inline tables fall back to the enclosing table's header line.
    """

    def __init__(self, text: str):
        self.headers: Dict[Path, int] = {}
        self.keys: Dict[Tuple[Path, str], int] = {}
        table: Path = ()
        counts: Dict[Path, int] = {}
        closing = ""        # the delimiter that ends the multi-line string being skipped
        for number_, line in enumerate(text.splitlines(), start=1):
            if closing:
                closing = "" if closing in line else closing
                continue
            header = _HEADER.match(line)
            if header:
                table = self._enter(header, counts, table)
                self.headers.setdefault(table, number_)
                continue
            key = _KEY.match(line)
            if key:
                self.keys.setdefault((table, key.group(1).strip("\"'")), number_)
                closing = _multiline_opened(line[key.end():])

    @staticmethod
    def _enter(header: Any, counts: Dict[Path, int], table: Path) -> Path:
        names = [part.strip().strip("\"'") for part in header.group(2).split(".")]
        if header.group(1) == "[":
            return tuple(names)
        parent = _array_parent(names[:-1], table)
        array = parent + (names[-1],)
        counts[array] = counts.get(array, 0) + 1
        return array + (counts[array],)

    def line(self, path: Path) -> Optional[int]:
        """The line of the key at ``path`` (or of its table, or of the table above)."""
        for length in range(len(path), -1, -1):
            head, last = path[:length - 1], path[length - 1] if length else None
            if isinstance(last, str) and (head, last) in self.keys:
                return self.keys[(head, last)]
            for candidate in (path[:length], path[:length] + (1,)):
                if candidate and candidate in self.headers:
                    return self.headers[candidate]
        return None


def _multiline_opened(value: str) -> str:
    """The delimiter of a multi-line string that starts in ``value`` and does not end there, else ''."""
    opened = _MULTILINE.match(value)
    if opened and opened.group(1) not in opened.group(2):
        return opened.group(1)
    return ""


def _array_parent(names: List[str], table: Path) -> Path:
    """The path of ``[[a.b]]``'s parent ``a``: the current element of array ``a`` when inside one."""
    prefix: Path = ()
    remaining = list(names)
    for part in table:
        if not remaining:
            break
        if isinstance(part, str):
            if part != remaining[0]:
                return tuple(names)
            remaining.pop(0)
        prefix += (part,)
    if remaining:
        return tuple(names)
    if len(prefix) < len(table) and isinstance(table[len(prefix)], int):
        prefix += (table[len(prefix)],)
    return prefix


# -- reading a file --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    """The file being read: its name for messages and a locator for lines."""

    source: str
    locator: Locator

    def fail(self, path: Path, message: str) -> NoReturn:
        line = self.locator.line(path)
        where = f"{self.source}:{line}" if line else self.source
        raise ConfigError(f"{where}: {path_text(path)}: {message}")


def found(value: Any) -> str:
    """A TOML value as the user wrote it, for 'found ...'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


@dataclass(frozen=True)
class Table:
    """One TOML table of the file with its place (for messages)."""

    doc: Document
    data: Dict[str, Any]
    path: Path

    def check_keys(self, allowed: Sequence[str]) -> None:
        for key in self.data:
            if key not in allowed:
                self.doc.fail(self.path + (key,), f"unknown key; allowed here: {', '.join(allowed)}")

    def get(self, key: str, check: Check, default: Any = None) -> Any:
        if key not in self.data:
            return default
        return self.check(key, check)

    def require(self, key: str, check: Check) -> Any:
        if key not in self.data:
            header = ".".join(part for part in self.path if isinstance(part, str))
            self.doc.fail(self.path + (key,), f"missing: every [[{header}]] needs the key {key!r}")
        return self.check(key, check)

    def check(self, key: str, check: Check) -> Any:
        value = self.data[key]
        try:
            return check(value)
        except Unfit as unfit:
            detail = f": {unfit.detail}" if unfit.detail else ""
            self.doc.fail(self.path + (key,), f"expected {unfit.expected}, found {found(value)}{detail}")

    def settings(self, keys: Dict[str, Check], defaults: Any) -> Dict[str, Any]:
        """The ``keys`` of this table, checked; those not given take their value from ``defaults``."""
        return {key: self.get(key, check, getattr(defaults, key)) for key, check in keys.items()}

    def table(self, key: str) -> Table:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.doc.fail(self.path + (key,), f"expected a [{key}] table, found {found(value)}")
        return Table(self.doc, value, self.path + (key,))

    def tables(self, key: str) -> List[Table]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            header = ".".join(part for part in self.path + (key,) if isinstance(part, str))
            self.doc.fail(self.path + (key,), f"expected [[{header}]] tables, found {found(value)}")
        return [Table(self.doc, item, self.path + (key, index)) for index, item in enumerate(value, start=1)]


def load(path: str) -> Config:
    """The configuration in the TOML file at ``path``; ConfigError names file, line and key of a fault."""
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return _config(Table(Document(path, Locator(text)), data, ()))


def _read(path: str) -> str:
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the configuration: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None


def _config(top: Table) -> Config:
    top.check_keys(TOP_KEYS)
    names = top.get("name_format", name_format, DEFAULT_NAME_FORMAT)
    buses = top.tables("bus")
    if not buses:
        top.doc.fail(("bus",), "the file configures no bus: add a [[bus]] with a port and a [[bus.meter]]")
    config = Config(
        buses=tuple(_bus(table, names) for table in buses),
        http=_http(top.table("http")),
        mqtt=_mqtt(top.table("mqtt")),
        metrics=MetricsConfig(**_section(top.table("metrics"), METRICS_KEYS, MetricsConfig())),
        counters=CountersConfig(**_section(top.table("counters"), COUNTERS_KEYS, CountersConfig())),
        state_dir=top.get("state_dir", directory_path, None),
        serve=tuple(_serve(table) for table in top.tables("serve")),
        verbose=top.get("verbose", boolean, False),
        source=top.doc.source,
        name_format=names,
    )
    try:
        check_gateway(config)
    except Clash as clash:
        top.doc.fail(clash.path, str(clash))
    return config


def _section(table: Table, keys: Dict[str, Check], defaults: Any) -> Dict[str, Any]:
    table.check_keys(tuple(keys))
    return table.settings(keys, defaults)


def _http(table: Table) -> HttpConfig:
    http = HttpConfig(**_section(table, HTTP_KEYS, HttpConfig()))
    try:
        check_http_caps(http)
    except ValueError as err:
        table.doc.fail(table.path + ("max_connections",), str(err))
    return http


def _mqtt(table: Table) -> MqttConfig:
    settings = _section(table, MQTT_KEYS, MqttConfig())
    if "password" not in table.data:
        settings["password"] = os.environ.get(PASSWORD_VARIABLE, "")
    return MqttConfig(**settings)


def _bus(table: Table, names: str) -> BusConfig:
    table.check_keys(BUS_KEYS)
    name = table.require("name", bus_name)
    port = table.require("port", port_text)
    line = _line(table)
    meters = table.tables("meter")
    if not meters:
        table.doc.fail(table.path + ("meter",), f"bus {name!r} has no meter: add a [[bus.meter]] with type and id")
    configs = tuple(_meter(meter, name, names) for meter in meters)
    defaults = BusConfig(name, port)
    bus = BusConfig(name=name, port=port, baud=line.baud, parity=line.parity, meters=configs,
                    **table.settings(BUS_LIMITS, defaults), **table.settings(BUS_MODE_KEYS, defaults))
    if bus.mode != POLL and bus.kind != "serial":
        table.doc.fail(table.path + ("mode",), f"mode {bus.mode!r} listens to the RS485 line itself: "
                       "it needs a serial adapter, not a TCP gateway")
    return bus


def _serve(table: Table) -> ServeConfig:
    table.check_keys(SERVE_KEYS)
    given = [key for key in ("listen", "port") if key in table.data]
    if len(given) != 1:
        table.doc.fail(table.path + ("listen",), "give exactly one of listen (a Modbus TCP server, "
                       'e.g. "127.0.0.1:5020") or port (an RTU slave on a serial adapter)')
    line = _line(table)
    return ServeConfig(
        listen=table.get("listen", _checked_by(serve_address, 'an address such as "127.0.0.1:5020" or ":5020"'), ""),
        port=table.get("port", serial_port, ""), baud=line.baud, parity=line.parity,
        units=tuple(ServeUnit(unit.require("id", integer(1, MAX_SLAVE_ID)), unit.require("meter", meter_name))
                    for unit in _unit_tables(table)),
        **table.settings(SERVE_LIMITS, ServeConfig()))


def _unit_tables(table: Table) -> List[Table]:
    units = table.tables("unit")
    for unit in units:
        unit.check_keys(UNIT_KEYS)
    return units


def _line(table: Table) -> Comset:
    """The serial settings: ``comset`` or ``baud``/``parity``, never both."""
    if "comset" in table.data:
        both = [key for key in ("baud", "parity") if key in table.data]
        if both:
            table.doc.fail(table.path + ("comset",),
                           f"give either comset or baud/parity, not both (found {both[0]} too)")
        return COMSETS[table.check("comset", comset_number)]
    default = COMSETS[DEFAULT_COMSET]
    return Comset(table.get("baud", integer(1), default.baud), table.get("parity", parity, default.parity))


def _meter(table: Table, bus: str, names: str) -> MeterConfig:
    table.check_keys(METER_KEYS)
    type_name, model = table.require("type", meter_type)
    device_id = table.require("id", integer(1, MAX_SLAVE_ID))
    return MeterConfig(
        bus=bus, device_id=device_id, type_name=type_name, model=model,
        name=table.get("name", meter_name, default_name(names, device_id)),
        pause=table.get("pause", pause_ms, None),
        interval=table.get("interval", number(0), 0.0),
        slow=table.get("slow", slow_interval, 0.0),
        max_current=table.get("max_current", max_current, None),
    )


# -- what the buses and meters must not share ------------------------------------------------------

class Clash(ValueError):
    """Two buses or meters that must differ do not; ``path`` is the second one's key."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = path


def check_gateway(config: Config) -> None:
    """Raise Clash for duplicate bus names, ports, meter ids on one bus, meter names, digit names,
    and for served units that do not fit the buses."""
    _unique_buses(config.buses)
    _unique_ids(config.buses)
    _unique_names(config)
    _digit_names(config.buses)
    _served_units(config)


def served_units(serve: ServeConfig, meters: Sequence[MeterConfig]) -> Dict[int, MeterConfig]:
    """The served id -> meter map of one ``[[serve]]``: its units, or every meter under its own id.
    ValueError when a unit names no configured meter, or two meters would share an id."""
    by_name = {meter.name: meter for meter in meters}
    pairs = [(unit.id, unit.meter) for unit in serve.units] or [(m.device_id, m.name) for m in meters]
    units: Dict[int, MeterConfig] = {}
    for unit_id, name in pairs:
        if name not in by_name:
            raise ValueError(f"unit {unit_id}: no meter is named {name!r} (known: {', '.join(by_name)})")
        if unit_id in units:
            raise ValueError(f"id {unit_id} would be served for both {units[unit_id].name!r} and {name!r}: "
                             "add [[serve.unit]] tables that give each meter an id of its own")
        units[unit_id] = by_name[name]
    return units


def _served_units(config: Config) -> None:
    taken: Dict[Any, int] = {}
    for index, serve in enumerate(config.serve, start=1):
        path: Path = ("serve", index)
        try:
            units = served_units(serve, config.meters)
        except ValueError as err:
            raise Clash(path + ("unit",), str(err)) from None
        if serve.writes == FORWARD:
            _forwardable(path, units.values(), {bus.name: bus for bus in config.buses})
        key = parse_port(serve.port).key if serve.port else ("listen", serve_address(serve.listen)[1])
        bus_ports = {parse_port(bus.port).key: bus.name for bus in config.buses}
        if key in bus_ports:
            raise Clash(path + ("port",), f"port {serve.port!r} is bus {bus_ports[key]!r}'s: an RTU slave "
                        "needs an adapter of its own")
        if key in taken and key[1] != 0:
            raise Clash(path + ("listen" if serve.listen else "port",),
                        f"{serve.where} is already used by serve[{taken[key]}]")
        taken[key] = index


def _forwardable(path: Path, meters: Iterable[MeterConfig], buses: Dict[str, BusConfig]) -> None:
    """Forwarded writes go out through the poller of a polled serial bus; anything else is refused here."""
    for meter in meters:
        bus = buses[meter.bus]
        if bus.mode != POLL or bus.kind != "serial":
            why = f"its mode is {bus.mode!r}" if bus.mode != POLL else "forwarding needs a serial adapter"
            raise Clash(path + ("writes",), f'writes = "forward": meter {meter.name!r} is on bus '
                        f"{bus.name!r}, where writes cannot be forwarded ({why}); use writes = \"deny\"")


def _unique_buses(buses: Sequence[BusConfig]) -> None:
    names: Dict[str, int] = {}
    ports: Dict[Any, int] = {}
    for index, bus in enumerate(buses, start=1):
        if bus.name in names:
            raise Clash(("bus", index, "name"), f"bus name {bus.name!r} is already used by bus[{names[bus.name]}]")
        names[bus.name] = index
        key = parse_port(bus.port).key
        if key in ports:
            other = buses[ports[key] - 1]
            raise Clash(("bus", index, "port"), f"port {bus.port!r} is the same as bus[{ports[key]}] "
                        f"{other.name!r} ({other.port!r}): one port can carry only one bus")
        ports[key] = index


def _unique_ids(buses: Sequence[BusConfig]) -> None:
    for index, bus in enumerate(buses, start=1):
        seen: Dict[int, int] = {}
        for number_, meter in enumerate(bus.meters, start=1):
            if meter.device_id in seen:
                raise Clash(("bus", index, "meter", number_, "id"),
                            f"meter id {meter.device_id} is configured twice on bus {bus.name!r} "
                            f"(also bus[{index}].meter[{seen[meter.device_id]}])")
            seen[meter.device_id] = number_


def _unique_names(config: Config) -> None:
    seen: Dict[str, Tuple[Path, MeterConfig]] = {}
    for path, meter in _meter_paths(config.buses):
        if meter.name not in seen:
            seen[meter.name] = (path, meter)
            continue
        first_path, first = seen[meter.name]
        default = default_name(config.name_format, meter.device_id)
        where = f"{path_text(first_path)} on bus {first.bus!r}"
        if meter.name == default and first.name == default and first.device_id == meter.device_id:
            raise Clash(path + ("name",), f"meters with id {meter.device_id} on buses {first.bus!r} and "
                        f"{meter.bus!r} both get the default name {meter.name!r}: give one of them a name")
        raise Clash(path + ("name",), f"meter name {meter.name!r} is already used by {where}")


def _digit_names(buses: Sequence[BusConfig]) -> None:
    """No all-digit names, so /last/{name} and /last/{id} never disagree.

    One exception keeps ``-f %d`` working: a meter named by its own id, when
    no other bus has a meter with that id.
    """
    buses_of: Dict[int, int] = {}
    for bus in buses:
        for device_id in {meter.device_id for meter in bus.meters}:
            buses_of[device_id] = buses_of.get(device_id, 0) + 1
    for path, meter in _meter_paths(buses):
        if not meter.name.strip().isdigit():
            continue
        if meter.name == str(meter.device_id) and buses_of[meter.device_id] == 1:
            continue
        raise Clash(path + ("name",), f"meter name {meter.name!r} is all digits; /last/{meter.name} would "
                    "read as a meter id: give it a name with a letter")


def _meter_paths(buses: Sequence[BusConfig]) -> Iterable[Tuple[Path, MeterConfig]]:
    for index, bus in enumerate(buses, start=1):
        for number_, meter in enumerate(bus.meters, start=1):
            yield ("bus", index, "meter", number_), meter


# -- the flags of sdm630_httpd ---------------------------------------------------------------------

def parse_pauses(items: Iterable[str]) -> Dict[str, float]:
    """``--pause TYPE=MS`` items -> {model key: seconds}."""
    pauses = {}
    for item in items:
        keyword, sep, ms = item.partition("=")
        if not sep:
            raise ValueError(f"--pause {item!r} is not TYPE=MS")
        try:
            seconds = pause_ms(float(ms))
            pauses[lookup(keyword).key] = seconds
        except Unfit as unfit:
            raise ValueError(f"--pause {item!r}: expected {unfit.expected}") from None
        except ValueError as err:
            raise ValueError(f"--pause {item!r}: {err}") from None
    return pauses


def _flag(flag: str, value: Any, check: Check) -> Any:
    try:
        return check(value)
    except Unfit as unfit:
        detail = f": {unfit.detail}" if unfit.detail else ""
        raise ValueError(f"{flag} {value!r}: expected {unfit.expected}{detail}") from None


def from_args(args: argparse.Namespace) -> Config:
    """The Config of today's one-bus command line (ValueError for bad flags, as before)."""
    devices = parse_device_list(args.device_list)
    names = _flag("--unique_id_format", args.unique_id_format, name_format)
    pauses = parse_pauses(args.pause)
    plan = schedules([device_id for _, _, device_id in devices], args.interval, args.slow)
    currents = _currents_from_args(args.max_current, [device_id for _, _, device_id in devices])
    meters = tuple(
        MeterConfig(bus=DEFAULT_BUS_NAME, device_id=device_id, type_name=type_name, model=model,
                    name=default_name(names, device_id), pause=pauses.get(model.key),
                    interval=plan[device_id].interval, slow=plan[device_id].slow_interval,
                    max_current=currents.get(device_id))
        for type_name, model, device_id in devices)
    line = comset(args.comset)
    limits = {key: _flag("--" + key.replace("_", "-"), getattr(args, key), check)
              for key, check in BUS_LIMITS.items()}
    bus = BusConfig(name=DEFAULT_BUS_NAME, port=_flag("--serialadapter", args.serialadapter, port_text),
                    baud=line.baud, parity=line.parity, meters=meters, **limits)
    if args.max_ws_clients < 0 or args.max_long_polls < 0:
        raise ValueError("--max-ws-clients and --max-long-polls must not be negative")
    http = HttpConfig(listen=_flag("--url", args.url, HTTP_KEYS["listen"]),
                      max_ws_clients=args.max_ws_clients, max_long_polls=args.max_long_polls,
                      ws_per_address=_flag("--ws-per-address", args.ws_per_address, HTTP_KEYS["ws_per_address"]),
                      long_polls_per_address=_flag("--long-polls-per-address", args.long_polls_per_address,
                                                   HTTP_KEYS["long_polls_per_address"]))
    if args.max_ws_clients + args.max_long_polls > http.max_connections:
        http = replace(http, max_connections=args.max_ws_clients + args.max_long_polls)
    config = Config(
        buses=(bus,),
        http=http,
        mqtt=_mqtt_from_args(args), metrics=MetricsConfig(bus_label=False),
        counters=CountersConfig(
            confirm_readings=_flag("--counter-confirm", args.counter_confirm, COUNTERS_KEYS["confirm_readings"]),
            confirm_seconds=_flag("--counter-confirm-seconds", args.counter_confirm_seconds,
                                  COUNTERS_KEYS["confirm_seconds"])),
        state_dir=None if args.state_dir is None else _flag("--state-dir", args.state_dir, directory_path),
        verbose=args.verbose, source="flags", name_format=names)
    try:
        check_gateway(config)
    except Clash as clash:
        raise ValueError(f"--unique_id_format {names!r}: {clash}") from None
    return config


def _currents_from_args(items: Iterable[str], device_ids: Sequence[int]) -> Dict[int, float]:
    """``--max-current [ID=]A`` items -> {id: amperes} for every configured meter they name."""
    everyone, per_meter = parse_seconds(items, "--max-current", unit="amperes")
    unknown = sorted(set(per_meter) - set(device_ids))
    if unknown:
        raise ValueError(f"--max-current names meter id {unknown[0]}, which is not configured")
    currents = {device_id: per_meter.get(device_id, everyone) for device_id in device_ids}
    return {device_id: _flag("--max-current", amperes, max_current)
            for device_id, amperes in currents.items() if amperes is not None}


def _mqtt_from_args(args: argparse.Namespace) -> MqttConfig:
    """The MQTT flags, checked by sdm.mqtt itself; flags without effect (MQTT or discovery off) are dropped."""
    from .mqtt import config_from_args, settings_from_config  # here: sdm.mqtt imports the hub, which imports us
    mqtt = config_from_args(args)
    if settings_from_config(mqtt) is None:
        return MqttConfig()
    return mqtt if mqtt.ha_discovery else replace(mqtt, ha_prefix=MqttConfig.ha_prefix)


# -- writing a file --------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """Our settings' values in TOML: strings, booleans, integers and finite floats."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _ms(seconds: float) -> float:
    """Milliseconds that read back (ms / 1000) as exactly ``seconds``, in the fewest digits found."""
    for digits in range(0, 18):
        candidate = round(seconds * 1000.0, digits)
        if candidate / 1000.0 == seconds:
            return candidate
    return seconds * 1000.0


def _changed(settings: Any, defaults: Any, keys: Iterable[str]) -> List[Tuple[str, Any]]:
    return [(key, getattr(settings, key)) for key in keys if getattr(settings, key) != getattr(defaults, key)]


def _lines(pairs: Iterable[Tuple[str, Any]], indent: str = "") -> List[str]:
    return [f"{indent}{key} = {toml_value(value)}" for key, value in pairs]


def to_toml(config: Config) -> str:
    """The file equivalent to ``config`` (for --print-config): every setting that differs from its default.

    The MQTT password is never written: a comment says where it comes from.
    """
    out = [f"# sdm630_httpd --config FILE; written from {config.source}"]
    top = [("name_format", config.name_format)] if config.name_format != DEFAULT_NAME_FORMAT else []
    top += [("state_dir", config.state_dir)] if config.state_dir is not None else []
    out += _lines(top + ([("verbose", True)] if config.verbose else []))
    out += ["", "# HTTP: listen address and the limits of clients (docs/config.md)", "[http]"]
    out += _lines([("listen", config.http.listen)]
                  + _changed(config.http, HttpConfig(), [key for key in HTTP_KEYS if key != "listen"]))
    out += _mqtt_toml(config.mqtt)
    if not config.metrics.bus_label:
        out += ["", "# Prometheus: no bus label on the meter series (as a gateway started with flags)",
                "[metrics]", "bus_label = false"]
    counters = _changed(config.counters, CountersConfig(), COUNTERS_KEYS)
    if counters:
        out += ["", "# energy counters: readings (and seconds) before a reset or step is believed", "[counters]"]
        out += _lines(counters)
    for bus in config.buses:
        out += _bus_toml(bus, config.name_format)
    for serve in config.serve:
        out += _serve_toml(serve)
    return "\n".join(out) + "\n"


def _mqtt_toml(mqtt: MqttConfig) -> List[str]:
    changed = _changed(mqtt, MqttConfig(), [key for key in MQTT_KEYS if key != "password"])
    if not changed:
        return ["", '# MQTT is off; an [mqtt] table with broker = "tcp://HOST:1883" turns it on']
    out = ["", "# MQTT: off while broker is empty", "[mqtt]"] + _lines(changed)
    if mqtt.broker:
        out.append(f'# password: not written here; set ${PASSWORD_VARIABLE} or add password = "..."')
    return out


BUS_KINDS = {"serial": "a serial adapter", "rtu+tcp": "RTU frames over TCP (a transparent gateway)",
             "tcp": "Modbus TCP (the meter id is the unit id)"}


def _bus_toml(bus: BusConfig, names: str) -> List[str]:
    out = ["", f"# {BUS_KINDS[bus.kind]}", "[[bus]]"] + _lines([("name", bus.name), ("port", bus.port)])
    line = Comset(bus.baud, bus.parity)
    numbered = [number_ for number_, known in COMSETS.items() if known == line]
    # behind a Modbus TCP gateway the serial line matters only for timing: left out when it is the default
    if bus.kind != "tcp" or line != COMSETS[DEFAULT_COMSET]:
        out += _lines([("comset", numbered[0])] if numbered else [("baud", bus.baud), ("parity", bus.parity)])
    out += _lines(_changed(bus, BusConfig(bus.name, bus.port), (*BUS_LIMITS, *BUS_MODE_KEYS)))
    for meter in bus.meters:
        out += ["", "  [[bus.meter]]"] + _lines(_meter_pairs(meter, names), indent="  ")
    return out


def _serve_toml(serve: ServeConfig) -> List[str]:
    what = "a Modbus TCP server" if serve.listen else "an RTU slave on an adapter of its own"
    out = ["", f"# the meters served as MODBUS devices from the cache: {what}", "[[serve]]"]
    if serve.listen:
        out += _lines([("listen", serve.listen)])
    else:
        out += _lines([("port", serve.port)])
        line = Comset(serve.baud, serve.parity)
        numbered = [number_ for number_, known in COMSETS.items() if known == line]
        out += _lines([("comset", numbered[0])] if numbered else [("baud", serve.baud), ("parity", serve.parity)])
    out += _lines(_changed(serve, ServeConfig(), SERVE_LIMITS))
    for unit in serve.units:
        out += ["", "  [[serve.unit]]"] + _lines([("id", unit.id), ("meter", unit.meter)], indent="  ")
    return out


def _meter_pairs(meter: MeterConfig, names: str) -> List[Tuple[str, Any]]:
    pairs: List[Tuple[str, Any]] = [("type", meter.type_name.lower()), ("id", meter.device_id)]
    if meter.name != default_name(names, meter.device_id):
        pairs.append(("name", meter.name))
    if meter.pause is not None:
        pairs.append(("pause", _ms(meter.pause)))
    if meter.interval:
        pairs.append(("interval", meter.interval))
    if meter.slow:
        pairs.append(("slow", meter.slow))
    if meter.max_current is not None:
        pairs.append(("max_current", meter.max_current))
    return pairs
