"""Several buses in one process, from one configuration file: serial, RTU over TCP and Modbus TCP.

Independent peers: pymodbus serves known values as a Modbus TCP and as a
transparent RTU-over-TCP gateway; our simulator serves a pty, both gateway
kinds and the id collision users meet (an SDM630 at id 1 on every bus).
"""

import signal
import subprocess

import pytest

from tests.e2e.test_pymodbus_peer import assert_peer_values
from tests.support import Gateway, Process, free_port, python_cmd, wait_until

PEER_METERS = """
  [[bus.meter]]
  type = "sdm630"
  id = 1
  name = "{prefix}sdm"

  [[bus.meter]]
  type = "janitza"
  id = 26
  name = "{prefix}janitza"

  [[bus.meter]]
  type = "dzg"
  id = 36
  name = "{prefix}dzg"
"""


def start_process(tmp_path, name, cmd):
    proc = Process(cmd, tmp_path / f"{name}.log")
    proc.spawn()
    return proc


def listening(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def started(tmp_path):
    """Factory for child processes stopped after the test."""
    procs = []

    def start(proc):
        procs.append(proc)
        return proc

    yield start
    for proc in reversed(procs):
        proc.stop()


def all_read(gw):
    meters = gw.get("/status").json()["ConfiguredMeters"]
    return all(m["CompleteReadings"] > 0 for m in meters)


def test_pymodbus_gateways_tcp_and_rtu_over_tcp_read_over_http(tmp_path, started):
    ports = {kind: free_port() for kind in ("tcp", "rtu+tcp")}
    for kind, port in ports.items():
        started(start_process(tmp_path, f"pymodbus-{kind}",
                              python_cmd("tests.e2e.pymodbus_meters", kind, "127.0.0.1", str(port))))
    for port in ports.values():
        wait_until(lambda port=port: listening(port), 15, what="pymodbus listening")
    text = "{http}\n" + "".join(
        f'[[bus]]\nname = "{prefix}bus"\nport = "{kind}://127.0.0.1:{port}"\ntimeout = 1.0\n'
        + PEER_METERS.format(prefix=prefix)
        for prefix, (kind, port) in zip(("a", "b"), ports.items()))
    gw = started(Gateway.from_file(text, tmp_path / "peers.toml")).start()
    for prefix in ("a", "b"):
        assert_peer_values(*(gw.get(f"/last/{prefix}{kind}").json() for kind in ("sdm", "janitza", "dzg")))
    status = gw.get("/status").json()
    assert [(b["Name"], b["Transport"], b["Connected"]) for b in status["Buses"]] == [
        ("abus", "tcp", True), ("bbus", "rtu+tcp", True)]
    assert status["Modbus"]["TotalModbusErrors"] == 0


THREE_BUSES = """{http}
[[bus]]
name = "cabinet"
port = "{pty}"

  [[bus.meter]]
  type = "sdm630"
  id = 1
  name = "house"

  [[bus.meter]]
  type = "janitza"
  id = 26

[[bus]]
name = "garage"
port = "rtu+tcp://127.0.0.1:{rtu_port}"
timeout = 1.0

  [[bus.meter]]
  type = "sdm630"
  id = 1
  name = "garage1"

  [[bus.meter]]
  type = "sdm120"
  id = 2
  name = "wallbox"

[[bus]]
name = "pv"
port = "tcp://127.0.0.1:{tcp_port}"
timeout = 1.0

  [[bus.meter]]
  type = "sdm630"
  id = 1
  name = "pv1"

  [[bus.meter]]
  type = "dzg"
  id = 36
"""


@pytest.fixture
def three_buses(tmp_path, started, simulator):
    """A pty bus, an RTU-over-TCP gateway and a Modbus TCP gateway, each with an SDM630 at id 1."""
    pty = simulator("sdm630:1,janitza:26")
    ports = {"rtu": free_port(), "tcp": free_port()}

    def gateway_sim(kind, devices):
        flag = "--rtu-tcp" if kind == "rtu" else "--tcp"
        return Process(python_cmd("simulator", "-d", devices, "--seed", "5", flag, f"127.0.0.1:{ports[kind]}"),
                       tmp_path / f"sim-{kind}.log")

    sims = {"rtu": gateway_sim("rtu", "sdm630:1,sdm120:2"), "tcp": gateway_sim("tcp", "sdm630:1,dzg:36")}
    for sim in sims.values():
        started(sim).spawn()
    for port in ports.values():
        wait_until(lambda port=port: listening(port), 15, what="simulated gateway listening")
    text = THREE_BUSES.replace("{pty}", str(pty.link)).replace("{rtu_port}", str(ports["rtu"])) \
        .replace("{tcp_port}", str(ports["tcp"]))
    gw = started(Gateway.from_file(text, tmp_path / "sdm.toml", "-v"))
    gw.spawn()
    wait_until(lambda: gw._answers() and all_read(gw), 20, what="every meter of every bus read")
    return gw, sims


NAMES = ["house", "Instrument26", "garage1", "wallbox", "pv1", "Instrument36"]


def test_every_route_on_three_buses_with_colliding_ids(three_buses):
    gw, _ = three_buses
    assert [r["UniqueId"] for r in gw.get("/last").json()] == NAMES
    for name in NAMES:
        reading = gw.get(f"/last/{name}").json()
        assert reading["UniqueId"] == name and 200 < reading["Voltage"]["L1"] < 260
        assert gw.get(f"/minuteavg/{name}").json()["UniqueId"] == name
    for route in ("/last/1", "/minuteavg/1"):
        resp = gw.get(route)
        assert resp.status == 409 and resp.json()["meters"] == ["house", "garage1", "pv1"]
    assert gw.get("/last/2").json()["UniqueId"] == "wallbox"       # one bus has id 2: still works
    assert gw.get("/last/36").json()["UniqueId"] == "Instrument36"
    assert gw.get("/last/nobody").status == 404

    status = gw.get("/status").json()
    assert [(b["Name"], b["Transport"], b["Connected"]) for b in status["Buses"]] == [
        ("cabinet", "serial", True), ("garage", "rtu+tcp", True), ("pv", "tcp", True)]
    assert [(m["Name"], m["Bus"], m["Id"]) for m in status["ConfiguredMeters"]] == [
        ("house", "cabinet", 1), ("Instrument26", "cabinet", 26), ("garage1", "garage", 1),
        ("wallbox", "garage", 2), ("pv1", "pv", 1), ("Instrument36", "pv", 36)]
    assert status["Modbus"]["TotalModbusRequests"] == sum(b["Requests"] for b in status["Buses"])
    assert status["Modbus"]["TotalModbusErrors"] == sum(b["Errors"] for b in status["Buses"])

    metrics = gw.get("/metrics").body.decode()
    for name, bus in (("house", "cabinet"), ("garage1", "garage"), ("pv1", "pv")):
        assert f'sdm_meter_up{{bus="{bus}",meter="{name}",model="SDM630"}} 1.0' in metrics
    assert 'sdm_bus_connected{bus="garage"} 1.0' in metrics

    body = gw.get("/firehose?timeout=5&category=meterupdate&since_time=0").json()
    assert {e["data"]["Meter"] for e in body["events"]} == set(NAMES)


def test_a_dead_gateway_stops_only_its_bus_and_recovers_alone(three_buses):
    gw, sims = three_buses
    before = {m["Name"]: m["CompleteReadings"] for m in gw.get("/status").json()["ConfiguredMeters"]}
    sims["tcp"].signal(signal.SIGKILL)
    sims["tcp"].proc.wait()

    def pv_down():
        bus = next(b for b in gw.get("/status").json()["Buses"] if b["Name"] == "pv")
        return not bus["Connected"]

    wait_until(pv_down, 15, what="the pv bus to show disconnected")
    assert gw.get("/last/pv1").status == 503
    assert [r["UniqueId"] for r in gw.get("/last").json()] == NAMES[:4]
    meters = {m["Name"]: m["CompleteReadings"] for m in gw.get("/status").json()["ConfiguredMeters"]}
    wait_until(lambda: all(m["CompleteReadings"] > before[m["Name"]] + 2
                           for m in gw.get("/status").json()["ConfiguredMeters"] if m["Bus"] != "pv"),
               15, what="the other buses to go on reading")
    assert meters["pv1"] >= before["pv1"]
    sims["tcp"].spawn()                                   # the same gateway back on the same port
    wait_until(lambda: gw.get("/last/pv1").status == 200, 30, what="the pv bus to recover by itself")
    pv = next(b for b in gw.get("/status").json()["Buses"] if b["Name"] == "pv")
    assert pv["Connected"] and pv["Reconnects"] >= 1


@pytest.mark.parametrize("text,message", [
    ('[[bus]]\nname = "a"\nport = "/dev/ttyUSB0"\nspeed = 9600\n[[bus.meter]]\ntype = "sdm"\nid = 1\n',
     "bus[1].speed"),
    ('[[bus]]\nname = "a"\nport = "/dev/ttyUSB0"\n[[bus.meter]]\ntype = "sdm999"\nid = 1\n', "known"),
    ('[[bus]]\nname = "a"\nport = "/dev/ttyUSB0"\n[[bus.meter]]\ntype = "sdm"\nid = 1\n'
     '[[bus]]\nname = "b"\nport = "/dev/ttyUSB0"\n[[bus.meter]]\ntype = "sdm"\nid = 2\n', "/dev/ttyUSB0"),
    ('[[bus]]\nname = "a"\nport = "/dev/ttyUSB0"\n[[bus.meter]]\ntype = "sdm"\nid = 300\n', "1-247"),
])
def test_a_bad_file_starts_nothing_and_names_file_line_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = Process(python_cmd("sdm.cli.httpd", "--config", str(path)), tmp_path / "bad.log")
    proc.spawn()
    assert proc.proc.wait(15) == 2
    out = proc.log()
    assert "bad.toml:" in out and message in out and "Traceback" not in out


def test_print_config_gives_the_file_of_the_flags(tmp_path, simulator, gateway):
    """The printed file starts the same gateway as the flags did: same meters, names and plan."""
    sim = simulator("sdm630:1,janitza:26")
    flags = ["--pause", "janitza=30", "--interval", "26=2", "--timeout", "0.5"]
    printed = subprocess.run(python_cmd("sdm.cli.httpd", "-s", str(sim.link), "-d", "sdm:1,janitza:26", *flags,
                                        "--print-config"),
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert '[http]\nlisten = ":8080"\n' in printed and "bus_label = false" in printed
    by_flags = gateway(sim.link, "sdm:1,janitza:26", *flags)
    keys = ("Id", "Name", "Bus", "Type", "UniqueId")
    expected = [{k: m[k] for k in keys} for m in by_flags.get("/status").json()["ConfiguredMeters"]]
    by_flags.stop()
    by_file = Gateway.from_file(printed.replace('[http]\nlisten = ":8080"\n', "{http}"), tmp_path / "printed.toml")
    try:
        by_file.start()
        assert [{k: m[k] for k in keys} for m in by_file.get("/status").json()["ConfiguredMeters"]] == expected
        assert "sdm_meter_up{meter=\"Instrument1\",model=\"SDM630\"} 1.0" in by_file.get("/metrics").body.decode()
    finally:
        by_file.stop()
