"""sdm.config: the TOML file, the flags, and the file written back (--print-config)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sdm import config
from sdm.cli.httpd import parser
from sdm.config import (
    DEFAULT_BUS_NAME,
    BusConfig,
    Config,
    ConfigError,
    CountersConfig,
    HttpConfig,
    MeterConfig,
    MetricsConfig,
    MqttConfig,
    ServeConfig,
    ServeUnit,
    from_args,
    load,
    parse_port,
    to_toml,
)
from sdm.meters.registry import ALIASES, MODELS, lookup
from sdm.transport import COMSETS

ISSUE_SAMPLE = """\
[http]
listen = ":8080"

[[bus]]
name = "cabinet"
port = "/dev/serial/by-id/usb-FTDI_...-port0"   # a serial adapter
comset = 2                                        # gosdm630's table; or baud = 9600, parity = "N"

  [[bus.meter]]
  type = "sdm630"
  id = 1
  name = "house"          # optional; becomes the UniqueId; default "Instrument<id>" (the -f format)

  [[bus.meter]]
  type = "janitza"
  id = 26

[[bus]]
name = "garage"
port = "rtu+tcp://192.168.1.50:8899"   # raw RTU frames over TCP (transparent gateway)
timeout = 1.0

  [[bus.meter]]
  type = "sdm120"
  id = 1
  name = "wallbox"

[[bus]]
name = "pv"
port = "tcp://192.168.1.60:502"        # Modbus TCP (MBAP header); the meter id is the unit id

  [[bus.meter]]
  type = "dzg"
  id = 36
"""


def write(tmp_path: Path, text: str, name: str = "sdm.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def meter(bus: str, device_id: int, keyword: str, name: str, **extra) -> MeterConfig:
    return MeterConfig(bus=bus, device_id=device_id, type_name=keyword.upper(), model=lookup(keyword),
                       name=name, **extra)


def test_the_issue_sample_loads_to_three_buses(tmp_path, monkeypatch):
    monkeypatch.delenv(config.PASSWORD_VARIABLE, raising=False)
    path = write(tmp_path, ISSUE_SAMPLE)
    expected = Config(
        buses=(
            BusConfig("cabinet", "/dev/serial/by-id/usb-FTDI_...-port0", baud=9600, parity="N",
                      meters=(meter("cabinet", 1, "sdm630", "house"),
                              meter("cabinet", 26, "janitza", "Instrument26"))),
            BusConfig("garage", "rtu+tcp://192.168.1.50:8899", timeout=1.0,
                      meters=(meter("garage", 1, "sdm120", "wallbox"),)),
            BusConfig("pv", "tcp://192.168.1.60:502", meters=(meter("pv", 36, "dzg", "Instrument36"),)),
        ),
        http=HttpConfig(listen=":8080"), source=path)
    loaded = load(path)
    assert loaded == expected
    assert [bus.kind for bus in loaded.buses] == ["serial", "rtu+tcp", "tcp"]
    assert [m.name for m in loaded.meters] == ["house", "Instrument26", "wallbox", "Instrument36"]


def test_every_key_of_every_section(tmp_path, monkeypatch):
    monkeypatch.setenv(config.PASSWORD_VARIABLE, "from-env")
    ca_file = write(tmp_path, "not a real certificate", "ca.pem")
    path = write(tmp_path, f"""\
name_format = "M-%d"
verbose = true
state_dir = "/var/lib/sdm"
[http]
listen = "127.0.0.1:9000"
max_ws_clients = 5
max_long_polls = 0
[mqtt]
broker = "ssl://broker.example:8883"
topic = "home/sdm"
user = "gw"
client_id = "gw1"
qos = 1
rate = 2
clean = true
ca_file = "{ca_file}"
per_value = true
queue = 10
backoff_max = 5
ha_discovery = true
ha_prefix = "ha"
[metrics]
bus_label = false
[counters]
confirm_readings = 3
confirm_seconds = 10
first_readings = 2
[[bus]]
name = "b"
port = "/dev/ttyUSB3"
baud = 4800
parity = "e"
timeout = 0.5
retries = 0
max_failures = 1
reprobe_max = 30
  [[bus.meter]]
  type = "SDM"
  id = 7
  pause = 25
  interval = 5
  slow = true
  [[bus.meter]]
  type = "dzg"
  id = 8
  slow = 30.5
  max_current = 400
""")
    loaded = load(path)
    assert loaded == Config(
        buses=(BusConfig("b", "/dev/ttyUSB3", baud=4800, parity="E", timeout=0.5, retries=0, max_failures=1,
                         reprobe_max=30.0,
                         meters=(meter("b", 7, "sdm", "M-7", pause=0.025, interval=5.0, slow=10.0),
                                 meter("b", 8, "dzg", "M-8", slow=30.5, max_current=400.0))),),
        http=HttpConfig("127.0.0.1:9000", 5, 0),
        mqtt=MqttConfig("ssl://broker.example:8883", "home/sdm", "gw", "from-env", "gw1", 1, 2.0, True, ca_file,
                        True, 10, 5.0, True, "ha"),
        metrics=MetricsConfig(bus_label=False), counters=CountersConfig(3, 10.0, 2), state_dir="/var/lib/sdm",
        verbose=True, source=path, name_format="M-%d")
    assert loaded.meters[0].model is MODELS["sdm630"]


def test_a_password_in_the_file_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(config.PASSWORD_VARIABLE, "from-env")
    text = '[mqtt]\nbroker = "localhost"\npassword = "in-file"\n' + ISSUE_SAMPLE.split("\n", 3)[3]
    assert load(write(tmp_path, text)).mqtt.password == "in-file"


# -- errors: each names the file, the line and the key ---------------------------------------------

BUS = '[[bus]]\nname = "a"\nport = "/dev/ttyUSB0"\n'
METER = '  [[bus.meter]]\n  type = "sdm630"\n  id = 1\n'

# (file text with "#<" on the line the message must name, key path, fragments the message must carry)
ERRORS = [
    ("verbose = 1 #<\n" + BUS + METER, "verbose", ["expected true or false, found 1"]),
    ("colour = 1 #<\n" + BUS + METER, "colour", ["unknown key", "allowed here: name_format, verbose"]),
    ('name_format = "Meter" #<\n' + BUS + METER, "name_format", ["%d", 'found "Meter"']),
    ('name_format = "%d%d" #<\n' + BUS + METER, "name_format", ["does not format"]),
    ('[http]\nlistn = ":80" #<\n' + BUS + METER, "http.listn", ["unknown key", "listen, max_ws_clients"]),
    ('[http]\nlisten = "8080" #<\n' + BUS + METER, "http.listen", ['found "8080"', "has no port"]),
    ("[http]\nmax_ws_clients = -1 #<\n" + BUS + METER, "http.max_ws_clients", ["an integer >= 0, found -1"]),
    ("[http]\nmax_connections = 100 #<\n" + BUS + METER, "http.max_connections",
     ["200 + 200", "must fit inside max_connections (100)"]),
    ("[http]\nhead_timeout = 0 #<\n" + BUS + METER, "http.head_timeout", ["a number of seconds > 0"]),
    ('[http]\ncors = "evil" #<\n' + BUS + METER, "http.cors", ['"*", "" (no CORS header) or one origin']),
    ('[http]\nws_origins = ["http://x.lan/page"] #<\n' + BUS + METER, "http.ws_origins", ["no path"]),
    ('[http]\nws_origins = "http://x.lan" #<\n' + BUS + METER, "http.ws_origins", ["an array of origins"]),
    ("[mqtt]\nqos = 3 #<\n" + BUS + METER, "mqtt.qos", ["an integer 0-2, found 3"]),
    ('[mqtt]\nbroker = "ftp://x" #<\n' + BUS + METER, "mqtt.broker", ["scheme must be one of"]),
    ('[mqtt]\ntopic = "a/#" #<\n' + BUS + METER, "mqtt.topic", ["'#'"]),
    ('[mqtt]\nca_file = "/nonexistent/ca.pem" #<\n' + BUS + METER, "mqtt.ca_file", ["is not a file"]),
    ("[mqtt]\nqueue = 0 #<\n" + BUS + METER, "mqtt.queue", ["an integer >= 1, found 0"]),
    ("[mqtt]\nrate = nan #<\n" + BUS + METER, "mqtt.rate", ["a number of seconds >= 0, found nan"]),
    ("[metrics]\nbus_label = \"yes\" #<\n" + BUS + METER, "metrics.bus_label", ['found "yes"']),
    ("[counters]\nconfirm_readings = 1 #<\n" + BUS + METER, "counters.confirm_readings", ["an integer >= 2, found 1"]),
    ("[counters]\nconfirm_seconds = -1 #<\n" + BUS + METER, "counters.confirm_seconds", ["found -1"]),
    ("[counters]\nfirst_readings = 0 #<\n" + BUS + METER, "counters.first_readings", ["found 0"]),
    ("[counters]\nconfirm = 5 #<\n" + BUS + METER, "counters.confirm", ["unknown key", "confirm_readings"]),
    ('state_dir = "" #<\n' + BUS + METER, "state_dir", ["a directory path"]),
    ("state_dir = 5 #<\n" + BUS + METER, "state_dir", ["a string, found 5"]),
    (BUS + METER + "  max_current = 0 #<\n", "bus[1].meter[1].max_current", ["a number of amperes > 0, found 0"]),
    (BUS + METER + '  max_current = "63" #<\n', "bus[1].meter[1].max_current", ['found "63"']),
    ("[bus] #<\nname = 'a'\n", "bus", ["expected [[bus]] tables, found a table"]),
    ("verbose = true\n", "bus", ["no bus"]),                      # no line to name: file and key only
    ('[[bus]] #<\nport = "/dev/ttyUSB0"\n' + METER, "bus[1].name", ["missing"]),
    ('[[bus]] #<\nname = "a"\n' + METER, "bus[1].port", ["missing"]),
    ('[[bus]]\nname = "12" #<\nport = "/dev/ttyUSB0"\n' + METER, "bus[1].name", ["not all digits"]),
    ('[[bus]]\nname = "" #<\nport = "/dev/ttyUSB0"\n' + METER, "bus[1].name", ["not blank"]),
    ('[[bus]]\nname = "a"\nport = "" #<\n' + METER, "bus[1].port", ["serial device path", "empty"]),
    ('[[bus]]\nname = "a"\nport = "udp://h:1" #<\n' + METER, "bus[1].port", ["unknown scheme 'udp'"]),
    ('[[bus]]\nname = "a"\nport = "rtu+tcp://h" #<\n' + METER, "bus[1].port", ["needs a port"]),
    ('[[bus]]\nname = "a"\nport = "tcp://h:99999" #<\n' + METER, "bus[1].port", ["1-65535"]),
    ('[[bus]]\nname = "a"\nport = "tcp://h:x" #<\n' + METER, "bus[1].port", ["'x' is not a number"]),
    ('[[bus]]\nname = "a"\nport = "tcp://:502" #<\n' + METER, "bus[1].port", ["host is missing"]),
    ('[[bus]]\nname = "a"\nport = "tcp://h:502/x" #<\n' + METER, "bus[1].port", ["only HOST and PORT"]),
    ('[[bus]]\nname = "a"\nport = "tcp://fd00::1:502" #<\n' + METER, "bus[1].port", ["brackets"]),
    ('[[bus]]\nname = "a"\nport = "tcp://[fd00::zz]:502" #<\n' + METER, "bus[1].port", ["IPv6 address"]),
    ('[[bus]]\nname = "a"\nport = "tcp://h_x:502" #<\n' + METER, "bus[1].port", ["not a host name"]),
    (BUS + "comset = 7 #<\n" + METER, "bus[1].comset", ["an integer 1-6, found 7"]),
    (BUS + "comset = 2 #<\nbaud = 9600\n" + METER, "bus[1].comset", ["not both", "baud"]),
    (BUS + 'parity = "O" #<\n' + METER, "bus[1].parity", ['"N" (none) or "E" (even)', 'found "O"']),
    (BUS + "baud = true #<\n" + METER, "bus[1].baud", ["an integer >= 1, found true"]),
    (BUS + "timeout = 0 #<\n" + METER, "bus[1].timeout", ["> 0, found 0"]),
    (BUS + 'timeout = "1" #<\n' + METER, "bus[1].timeout", ['found "1"']),
    (BUS + "retries = -1 #<\n" + METER, "bus[1].retries", [">= 0, found -1"]),
    (BUS + "max_failures = 0 #<\n" + METER, "bus[1].max_failures", [">= 1, found 0"]),
    (BUS + "reprobe_max = -5 #<\n" + METER, "bus[1].reprobe_max", ["> 0, found -5"]),
    (BUS + "baudrate = 9600 #<\n" + METER, "bus[1].baudrate", ["unknown key", "allowed here: name, port"]),
    (BUS.replace("[[bus]]", "[[bus]] #<"), "bus[1].meter", ["has no meter"]),
    (BUS + "meter = 5 #<\n", "bus[1].meter", ["expected [[bus.meter]] tables, found 5"]),
    (BUS + '  [[bus.meter]]\n  type = "sdm630"\n  id = "x" #<\n', "bus[1].meter[1].id",
     ['expected an integer 1-247, found "x"']),
    (BUS + '  [[bus.meter]]\n  type = "sdm630"\n  id = true #<\n', "bus[1].meter[1].id", ["found true"]),
    (BUS + '  [[bus.meter]]\n  type = "sdm630"\n  id = 0 #<\n', "bus[1].meter[1].id", ["1-247, found 0"]),
    (BUS + '  [[bus.meter]]\n  type = "sdm630"\n  id = 248 #<\n', "bus[1].meter[1].id", ["1-247, found 248"]),
    (BUS + '  [[bus.meter]] #<\n  type = "sdm630"\n', "bus[1].meter[1].id", ["missing"]),
    (BUS + '  [[bus.meter]]\n  type = "sdm999" #<\n  id = 1\n', "bus[1].meter[1].type",
     ["unknown meter type 'sdm999'", "known: dzg, janitza, sdm, sdm120"]),
    (BUS + METER + "  adress = 3 #<\n", "bus[1].meter[1].adress", ["unknown key", "type, id, name, pause"]),
    (BUS + METER + '  name = "a/b" #<\n', "bus[1].meter[1].name", ["no '/'"]),
    (BUS + METER + '  name = "42" #<\n', "bus[1].meter[1].name", ["all digits"]),
    (BUS + METER + "  pause = -1 #<\n", "bus[1].meter[1].pause", ["milliseconds >= 0, found -1"]),
    (BUS + METER + "  interval = -1 #<\n", "bus[1].meter[1].interval", ["seconds >= 0, found -1"]),
    (BUS + METER + "  slow = 0 #<\n", "bus[1].meter[1].slow", ["> 0, or true", "found 0"]),
    (BUS + METER + '  [[bus.meter]]\n  type = "dzg"\n  id = 1 #<\n', "bus[1].meter[2].id",
     ["meter id 1 is configured twice on bus 'a'"]),
    (BUS + METER + '[[bus]]\nname = "a" #<\nport = "/dev/ttyUSB1"\n' + METER, "bus[2].name",
     ["bus name 'a' is already used by bus[1]"]),
    (BUS + METER + '[[bus]]\nname = "b"\nport = "/dev/ttyUSB0" #<\n' + METER.replace("1", "2"),
     "bus[2].port", ["same as bus[1] 'a'"]),
    (BUS + METER + '[[bus]]\nname = "b"\nport = "/dev/ttyUSB1"\n' + METER.replace("[[bus.meter]]", "[[bus.meter]] #<"),
     "bus[2].meter[1].name", ["both get the default name 'Instrument1'", "give one of them a name"]),
    (BUS + METER + '  name = "x"\n[[bus]]\nname = "b"\nport = "/dev/ttyUSB1"\n'
     + METER.replace("id = 1", "id = 2") + '  name = "x" #<\n',
     "bus[2].meter[1].name", ["meter name 'x' is already used by bus[1].meter[1] on bus 'a'"]),
    ('[[bus]]\nname = "a"\nport = "tcp://gw"\n' + METER + '[[bus]]\nname = "b"\nport = "rtu+tcp://GW:502" #<\n'
     + METER.replace("id = 1", "id = 2"), "bus[2].port", ["one port can carry only one bus"]),
    (BUS + 'mode = "sniff" #<\n' + METER, "bus[1].mode", ['"poll", "listen" or "auto"', 'found "sniff"']),
    (BUS + "takeover_after = 0 #<\n" + METER, "bus[1].takeover_after", ["seconds > 0"]),
    ('[[bus]]\nname = "a"\nport = "tcp://gw"\nmode = "listen" #<\n' + METER, "bus[1].mode",
     ["needs a serial adapter"]),
    (BUS + METER + "[[serve]] #<\nmax_age = 1\n", "serve[1].listen", ["exactly one of listen", "or port"]),
    (BUS + METER + '[[serve]]\nlisten = "5020" #<\n', "serve[1].listen", ["no port"]),
    (BUS + METER + '[[serve]]\nport = "tcp://gw" #<\n', "serve[1].port", ["a serial device path"]),
    (BUS + METER + '[[serve]]\nport = "/dev/ttyUSB0" #<\n', "serve[1].port", ["is bus 'a''s"]),
    (BUS + METER + '[[serve]]\nlisten = ":5020"\nwrites = "yes" #<\n', "serve[1].writes",
     ['"deny" or "forward"']),
    (BUS + METER + '[[serve]]\nlisten = ":5020"\nmax_age = 0 #<\n', "serve[1].max_age", ["> 0"]),
    (BUS + METER + '[[serve]]\nlisten = ":5020"\n  [[serve.unit]] #<\n  id = 3\n  meter = "nope"\n',
     "serve[1].unit", ["no meter is named 'nope'"]),
    (BUS + METER + '[[serve]]\nlisten = ":5020"\n  [[serve.unit]] #<\n  id = 3\n  meter = "Instrument1"\n'
     '  [[serve.unit]]\n  id = 3\n  meter = "Instrument1"\n', "serve[1].unit", ["id 3 would be served for both"]),
    (BUS + METER + '[[serve]]\nlisten = ":5020"\n  [[serve.unit]]\n  id = 3\n  color = 1 #<\n  meter = "x"\n',
     "serve[1].unit[1].color", ["unknown key"]),
    ('[[bus]]\nname = "a"\nport = "tcp://gw"\n' + METER + '[[serve]]\nlisten = ":5020"\nwrites = "forward" #<\n',
     "serve[1].writes", ["cannot be forwarded", "needs a serial adapter"]),
    (BUS + METER + '[[serve]]\nlisten = ":5020"\n[[serve]]\nlisten = "127.0.0.1:5020" #<\n', "serve[2].listen",
     ["already used by serve[1]"]),
]


def expected_line(text: str) -> str:
    """``:N`` for the line marked ``#<``, empty when none is."""
    marked = [number for number, line in enumerate(text.splitlines(), start=1) if "#<" in line]
    assert len(marked) <= 1
    return f":{marked[0]}" if marked else ""


@pytest.mark.parametrize("text, key, fragments", ERRORS, ids=[case[1] + str(i) for i, case in enumerate(ERRORS)])
def test_a_bad_file_names_file_line_key_expected_and_found(tmp_path, text, key, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)          # sdm630_httpd turns ValueError into exit 2
    assert message.startswith(f"{path}{expected_line(text)}: {key}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message and "Traceback" not in message


def test_a_by_id_symlink_and_its_target_are_one_port(tmp_path):
    device = tmp_path / "ttyUSB0"
    device.write_text("")
    link = tmp_path / "usb-FTDI-port0"
    link.symlink_to(device)
    text = f'{BUS.replace("/dev/ttyUSB0", str(device))}{METER}[[bus]]\nname = "b"\nport = "{link}" #<\n{METER}'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}{expected_line(text)}: bus\[2\]\.port: .*same as bus\[1\]"):
        load(path)


def test_a_toml_syntax_error_keeps_tomllibs_line_and_column(tmp_path):
    path = write(tmp_path, BUS + METER + "  id = = 2\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML: .*line 7, column"):
        load(path)


def test_a_missing_or_binary_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="nothere.toml: cannot read the configuration: No such file"):
        load(str(tmp_path / "nothere.toml"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name_format = \"\xff%d\"\n")
    with pytest.raises(ConfigError, match="binary.toml: not UTF-8 text"):
        load(str(binary))


def test_a_dotted_key_falls_back_to_its_tables_line(tmp_path):
    text = BUS + METER + "[http]  #<\nlimits.max = 1\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}{expected_line(text)}: http.limits: unknown key"):
        load(path)


def test_a_name_that_is_its_own_id_is_allowed_on_one_bus_only(tmp_path):
    one_bus = 'name_format = "%d"\n' + BUS + METER
    assert load(write(tmp_path, one_bus)).meters[0].name == "1"
    two_buses = one_bus + '[[bus]]\nname = "b"\nport = "/dev/ttyUSB1"\n' + METER + '  name = "other"\n'
    with pytest.raises(ConfigError, match=r"bus\[1\]\.meter\[1\]\.name: meter name '1' is all digits"):
        load(write(tmp_path, two_buses, "two.toml"))


# -- ports -------------------------------------------------------------------------------------------

def test_port_forms():
    assert parse_port("/dev/ttyUSB0") == config.PortAddress("serial", device="/dev/ttyUSB0")
    assert parse_port("tcp://gw.local") == config.PortAddress("tcp", host="gw.local", port=502)
    assert parse_port("rtu+tcp://[fd00::5]:8899") == config.PortAddress("rtu+tcp", host="fd00::5", port=8899)


HOSTS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}\Z"),
)


@given(HOSTS, st.integers(1, 65535), st.sampled_from(["tcp", "rtu+tcp"]))
def test_a_tcp_port_parses_back_to_its_host_and_port(host, number, scheme):
    address = parse_port(f"{scheme}://{host}:{number}")
    assert (address.kind, address.host, address.port) == (scheme, host.strip("[]"), number)


# -- the file written back ---------------------------------------------------------------------------

@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_toml_string_reads_back_as_the_same_text(text):
    assert config.tomllib.loads(f"key = {config.toml_string(text)}")["key"] == text


TEXT = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/%")
NAMES = st.text(TEXT, min_size=1, max_size=10).filter(lambda s: s.strip() and not s.strip().isdigit())
KEYWORDS = st.sampled_from(sorted(set(MODELS) | set(ALIASES))).flatmap(
    lambda keyword: st.sampled_from([keyword, keyword.upper(), keyword.capitalize()]))
SECONDS = st.floats(0, 3600, allow_nan=False)
LINES = st.one_of(st.sampled_from(list(COMSETS.values())).map(lambda c: (c.baud, c.parity)),
                  st.tuples(st.integers(1, 10**6), st.sampled_from("NE")))


@st.composite
def http_configs(draw) -> HttpConfig:
    """Every [http] key, the stream caps inside the connection cap."""
    ws, polls = draw(st.integers(0, 1000)), draw(st.integers(0, 1000))
    origin = st.sampled_from(["http://dash.lan:3000", "https://grafana.example", "http://[fd00::1]:8080"])
    return HttpConfig(draw(st.sampled_from([":8080", "127.0.0.1:9000", "[::1]:8081"])), ws, polls,
                      max_connections=ws + polls + draw(st.integers(1, 5000)),
                      ws_per_address=draw(st.integers(1, 100)), long_polls_per_address=draw(st.integers(1, 100)),
                      head_timeout=draw(st.floats(0.5, 120)), cors=draw(st.one_of(st.just(""), st.just("*"), origin)),
                      ws_origins=tuple(draw(st.lists(origin, max_size=3))) or draw(st.sampled_from([(), ("*",)])))


@st.composite
def meters(draw, bus: str):
    keyword = draw(KEYWORDS)
    return dict(bus=bus, device_id=draw(st.integers(1, 247)), type_name=keyword.upper(), model=lookup(keyword),
                name=draw(st.none() | NAMES),
                pause=draw(st.none() | st.floats(0, 10000, allow_nan=False).map(lambda ms: ms / 1000.0)),
                interval=draw(st.just(0.0) | SECONDS), slow=draw(st.just(0.0) | st.floats(0.001, 3600)),
                max_current=draw(st.none() | st.floats(0.001, 1e5)))


@st.composite
def ports(draw, index: int):
    kind = draw(st.sampled_from(["serial", "by-id", "rtu+tcp", "tcp", "tcp502"]))
    host = draw(st.sampled_from(["127.0.0.1", "gw.local", "[::1]", "[fd00::5]"]))
    return {"serial": f"/dev/ttyUSB{index}", "by-id": f"/dev/serial/by-id/usb-FTDI_{index}-port0",
            "rtu+tcp": f"rtu+tcp://{host}:{4000 + index}", "tcp": f"tcp://{host}:{5000 + index}",
            "tcp502": f"tcp://gw{index}.example"}[kind]


@st.composite
def buses(draw, index: int, name: str, name_format: str):
    baud, parity = draw(LINES)
    drafts = draw(st.lists(meters(name), min_size=1, max_size=4, unique_by=lambda m: m["device_id"]))
    for draft in drafts:
        draft["name"] = draft["name"] or config.default_name(name_format, draft["device_id"])
    port = draw(ports(index))
    serial = parse_port(port).kind == "serial"
    return BusConfig(name=name, port=port, baud=baud, parity=parity,
                     timeout=draw(st.floats(0.001, 100)), retries=draw(st.integers(0, 10)),
                     max_failures=draw(st.integers(1, 100)), reprobe_max=draw(st.floats(0.1, 1e4)),
                     meters=tuple(MeterConfig(**draft) for draft in drafts),
                     mode=draw(st.sampled_from(config.BUS_MODES)) if serial else config.POLL,
                     takeover_after=draw(st.floats(0.001, 3600)))


@st.composite
def serves(draw, meters):
    """A [[serve]]: TCP or an RTU slave on a port no bus uses, its units naming configured meters."""
    tcp = draw(st.booleans())
    baud, parity = (9600, "N") if tcp else draw(LINES)      # a TCP server has no line
    names = [meter.name for meter in meters]
    units = draw(st.lists(st.tuples(st.integers(1, 247), st.sampled_from(names)), max_size=3,
                          unique_by=lambda unit: unit[0]))
    return ServeConfig(listen=draw(st.sampled_from([":5020", "0.0.0.0:502", "[::1]:1502"])) if tcp else "",
                       port="" if tcp else "/dev/ttyS9", baud=baud, parity=parity,
                       max_age=draw(st.floats(0.001, 600)), writes=config.DENY,
                       max_connections=draw(st.integers(1, 1000)), idle_timeout=draw(st.floats(0.1, 1e5)),
                       units=tuple(ServeUnit(unit_id, name) for unit_id, name in units))


@st.composite
def configs(draw):
    name_format = draw(st.sampled_from([config.DEFAULT_NAME_FORMAT, "%d", "m%d x 100%%"])
                       | st.tuples(st.text(TEXT, max_size=5), st.text(TEXT, max_size=5)).map("%d".join))
    bus_names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    mqtt = MqttConfig(
        broker=draw(st.sampled_from(["", "tcp://127.0.0.1:1883", "ssl://broker.example:8883", "localhost"])),
        topic=draw(st.sampled_from(["sdm630", "home/energy/sdm"])), user=draw(st.sampled_from(["", "gw"])),
        client_id=draw(st.sampled_from(["sdm630", "pi-garage"])), qos=draw(st.integers(0, 2)),
        rate=draw(SECONDS), clean=draw(st.booleans()), ca_file=draw(st.sampled_from([None, __file__])),
        per_value=draw(st.booleans()), queue=draw(st.integers(1, 10**6)), backoff_max=draw(st.floats(1, 600)),
        ha_discovery=draw(st.booleans()), ha_prefix=draw(st.sampled_from(["homeassistant", "ha/discovery"])))
    built = Config(
        buses=tuple(draw(buses(i, name, name_format)) for i, name in enumerate(bus_names)),
        http=draw(http_configs()),
        mqtt=mqtt, metrics=MetricsConfig(draw(st.booleans())), verbose=draw(st.booleans()),
        counters=CountersConfig(draw(st.integers(2, 100)), draw(SECONDS), draw(st.integers(1, 100))),
        state_dir=draw(st.sampled_from([None, "/var/lib/sdm", "~/state dir", 'a"b'])),
        name_format=name_format)
    built = dataclasses.replace(built, serve=tuple(draw(st.lists(serves(built.meters), max_size=1))))
    try:
        config.check_gateway(built)
    except config.Clash:
        assume(False)
    return built


def load_text(text: str) -> Config:
    with tempfile.TemporaryDirectory() as directory:
        return load(write(Path(directory), text))


def same_but_source_and_password(loaded: Config, original: Config) -> bool:
    return loaded == dataclasses.replace(original, source=loaded.source,
                                         mqtt=dataclasses.replace(original.mqtt, password=loaded.mqtt.password))


@settings(max_examples=150, deadline=None)
@given(configs())
def test_a_written_config_loads_back_equal(built):
    text = to_toml(built)
    assert same_but_source_and_password(load_text(text), built), text


@settings(max_examples=50, deadline=None)
@given(configs())
def test_the_locator_finds_every_meters_id_line(built):
    text = to_toml(built)
    lines = text.splitlines()
    locator = config.Locator(text)
    for b, bus in enumerate(built.buses, start=1):
        assert lines[locator.line(("bus", b, "name")) - 1] == f"name = {config.toml_string(bus.name)}"
        for m, item in enumerate(bus.meters, start=1):
            assert lines[locator.line(("bus", b, "meter", m, "id")) - 1] == f"  id = {item.device_id}"


def test_the_password_is_never_written():
    built = Config(buses=(BusConfig("a", "/dev/ttyUSB0", meters=(meter("a", 1, "sdm", "Instrument1"),)),),
                   mqtt=MqttConfig(broker="localhost", password="s3cret"))
    text = to_toml(built)
    assert "s3cret" not in text and "$SDM_MQTT_PASSWORD" in text


# -- the flags of sdm630_httpd -----------------------------------------------------------------------

def flags(line: str) -> Config:
    return from_args(parser().parse_args(line.split()))


def test_no_flags_is_todays_default_gateway():
    assert flags("") == Config(
        buses=(BusConfig(DEFAULT_BUS_NAME, "/dev/ttyUSB0", baud=9600, parity="N",
                         meters=(meter(DEFAULT_BUS_NAME, 1, "sdm", "Instrument1"),)),),
        metrics=MetricsConfig(bus_label=False), source="flags")


def test_a_full_command_line():
    got = flags("-s /dev/ttyUSB1 -c 5 -d janitza:26,SDM:1,sdm630:2 -f Meter%d -u 127.0.0.1:9000 -v "
                "--timeout 0.5 --retries 1 --max-failures 3 --reprobe-max 20 --pause sdm630=20 --pause dzg=5 "
                "--interval 26=5 --interval 1 --slow --slow 2=30 --max-ws-clients 7 --max-long-polls 8")
    bus = DEFAULT_BUS_NAME
    assert got == Config(
        buses=(BusConfig(bus, "/dev/ttyUSB1", baud=9600, parity="E", timeout=0.5, retries=1, max_failures=3,
                         reprobe_max=20.0, meters=(
                             meter(bus, 26, "janitza", "Meter26", interval=5.0, slow=10.0),
                             meter(bus, 1, "SDM", "Meter1", pause=0.020, interval=1.0, slow=10.0),
                             meter(bus, 2, "sdm630", "Meter2", pause=0.020, interval=1.0, slow=30.0))),),
        http=HttpConfig("127.0.0.1:9000", 7, 8), metrics=MetricsConfig(bus_label=False), verbose=True,
        source="flags", name_format="Meter%d")


def test_counter_flags():
    got = flags("-d sdm:1,sdm120:2,janitza:26 --max-current 200 --max-current 2=45.5 --state-dir /tmp/s "
                "--counter-confirm 3 --counter-confirm-seconds 2.5")
    assert [m.max_current for m in got.meters] == [200.0, 45.5, 200.0]
    assert got.counters == CountersConfig(confirm_readings=3, confirm_seconds=2.5)
    assert got.state_dir == "/tmp/s"
    assert flags("").counters == CountersConfig() and flags("").meters[0].max_current is None


@pytest.mark.parametrize("line, message", [
    ("--max-current 0", "--max-current 0.0: expected a number of amperes > 0"),
    ("--max-current 5=10", "--max-current names meter id 5, which is not configured"),
    ("--max-current ten", "'ten' is not a number of amperes"),
    ("--counter-confirm 1", "--counter-confirm 1: expected an integer >= 2"),
    ("--counter-confirm-seconds -1", "--counter-confirm-seconds -1.0: expected a number of seconds >= 0"),
    ("--state-dir=", "--state-dir '': expected a directory path"),
])
def test_bad_counter_flags_say_why(line, message):
    with pytest.raises(ValueError) as caught:
        flags(line)
    assert message in str(caught.value)


def test_mqtt_flags(tmp_path):
    got = flags(f"-b tcp://127.0.0.1:1883 -t home/sdm --user u --password p -i gw -q 1 -r 2.5 -l "
                f"--mqtt-ca {__file__} --mqtt-per-value --mqtt-queue 50 --mqtt-backoff-max 9 --ha-discovery "
                "--ha-prefix ha")
    assert got.mqtt == MqttConfig("tcp://127.0.0.1:1883", "home/sdm", "u", "p", "gw", 1, 2.5, True, __file__,
                                  True, 50, 9.0, True, "ha")
    assert flags("-t home/sdm --ha-discovery").mqtt == MqttConfig()          # no broker: MQTT flags do nothing
    assert flags("-b localhost --ha-prefix ha").mqtt == MqttConfig(broker="localhost")   # discovery off


@pytest.mark.parametrize("line", [
    "", "-d sdm:1,janitza:26 -c 1", "-s /dev/serial/by-id/usb-FTDI-port0 -c 4 -d sdm120:3 -f %d",
    "--pause sdm=0 --pause janitza=12.5 -d sdm:1,janitza:26 --interval 0.25 --slow 1=60",
    "-b ssl://broker.example:8883 -t a/b --ha-discovery -q 2 -d dzg:36",
    "-s tcp://gw.local:502 -d dzg:36", "-u [::1]:8081 --max-ws-clients 0 --timeout 2 --retries 0",
])
def test_print_config_of_a_command_line_loads_back_the_same(line, tmp_path):
    from_flags = flags(line)
    loaded = load(write(tmp_path, to_toml(from_flags)))
    assert same_but_source_and_password(loaded, from_flags)


@pytest.mark.parametrize("line, message", [
    ("-d sdm:1,sdm:1", "meter id 1 is configured twice"),
    ("-d sdm:0", "out of range 1-247"),
    ("-d foo:1", "unknown meter type 'foo'"),
    ("-f Meter", "--unique_id_format 'Meter': expected a name format"),
    ("-f Meter/%d", "no '/'"),
    ("--pause sdm630", "is not TYPE=MS"),
    ("--pause sdm630=x", "could not convert"),
    ("--pause sdm630=-1", "milliseconds >= 0"),
    ("--pause foo=1", "unknown meter type"),
    ("--interval 9=5", "meter id 9, which is not configured"),
    ("--slow x", "is not a number of seconds"),
    ("--timeout 0", "--timeout 0.0: expected a number of seconds > 0"),
    ("--retries -1", "--retries -1: expected an integer >= 0"),
    ("--max-failures 0", "--max-failures 0: expected an integer >= 1"),
    ("--reprobe-max 0", "--reprobe-max 0.0: expected"),
    ("--max-long-polls -1", "must not be negative"),
    ("-u 8080", "has no port"),
    ("-s udp://x:1", "unknown scheme"),
    ("-b tcp://x --mqtt-queue 0", "--mqtt-queue must be at least 1"),
    ("-b ftp://x", "scheme must be one of"),
    ("-b tcp://x -t a/#", "'#'"),
])
def test_bad_flags_are_a_value_error(line, message):
    with pytest.raises(ValueError) as caught:
        flags(line)
    assert message in str(caught.value)


def test_flags_with_dash_f_percent_d_name_meters_by_id():
    assert [m.name for m in flags("-d sdm:1,janitza:26 -f %d").meters] == ["1", "26"]


def test_the_default_password_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(config.PASSWORD_VARIABLE, "env-secret")
    assert flags("-b localhost").mqtt.password == "env-secret"
    assert os.environ[config.PASSWORD_VARIABLE] not in to_toml(flags("-b localhost"))


# -- docs/config.md stays true -----------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def doc_blocks() -> list:
    text = DOC.read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split("```toml\n")[1:]]


def test_the_documented_example_file_loads(tmp_path):
    loaded = load(write(tmp_path, doc_blocks()[0]))
    assert [(bus.name, bus.kind) for bus in loaded.buses] == [("cabinet", "serial"), ("garage", "rtu+tcp"),
                                                              ("pv", "tcp")]
    assert parse_port(loaded.buses[2].port).port == 502


def test_the_documented_print_config_is_what_to_toml_writes():
    line = "-s /dev/ttyUSB0 -c 5 -d janitza:26,sdm:1 --pause sdm=30 --slow"
    assert f"`sdm630_httpd {line}`" in DOC.read_text(encoding="utf-8")
    assert doc_blocks()[-1] == to_toml(flags(line))


def test_serve_and_listen_keys_load(tmp_path):
    loaded = load(write(tmp_path, """
[[bus]]
name = "inverter"
port = "/dev/ttyUSB0"
mode = "auto"
takeover_after = 4
  [[bus.meter]]
  type = "sdm630"
  id = 1
  name = "house"
[[bus]]
name = "cabinet"
port = "/dev/ttyUSB2"
  [[bus.meter]]
  type = "sdm120"
  id = 2
  name = "heat"
[[serve]]
listen = ":5020"
max_age = 1.5
writes = "forward"
max_connections = 4
idle_timeout = 30
  [[serve.unit]]
  id = 9
  meter = "heat"
[[serve]]
port = "/dev/ttyUSB1"
comset = 5
"""))
    bus = loaded.buses[0]
    assert (bus.mode, bus.takeover_after) == ("auto", 4.0)
    tcp, rtu = loaded.serve
    assert (tcp.listen, tcp.max_age, tcp.writes, tcp.max_connections, tcp.idle_timeout) == (
        ":5020", 1.5, "forward", 4, 30.0)
    assert tcp.units == (ServeUnit(9, "heat"),)
    assert (rtu.port, rtu.baud, rtu.parity, rtu.writes, rtu.units) == ("/dev/ttyUSB1", 9600, "E", "deny", ())
    assert config.serve_address(tcp.listen) == ("127.0.0.1", 5020)      # loopback unless a host is given
    assert config.served_units(rtu, loaded.meters) == {1: loaded.meters[0], 2: loaded.meters[1]}


def test_the_locator_skips_multi_line_strings():
    text = ('[[bus]]\nname = """\nid = 5\n[[bus.meter]]\n"""\nport = \'\'\'x\'\'\'\n'
            'retries = 1\n  [[bus.meter]]\n  id = 3\n')
    locator = config.Locator(text)
    assert locator.line(("bus", 1, "retries")) == 7
    assert locator.line(("bus", 1, "meter", 1, "id")) == 9
    assert ("bus", 1, "meter", 2) not in locator.headers
