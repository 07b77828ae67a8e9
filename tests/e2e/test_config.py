"""sdm_config as a user runs it: against pymodbus (an independent peer holding Eastron's setting
registers) and against the simulator, through to sdm_detect and the gateway."""

import json
import os
import signal
import struct
import subprocess

import pytest

from tests.support import ROOT, Process, python_cmd, wait_until


def run(module: str, *args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(python_cmd(module, *args), cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=stdin)


def config(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run("sdm.cli.config", *args, **kwargs)


def words(value: float):
    """float32, high word first, packed by hand (not with sdm.encoding)."""
    return list(struct.unpack(">HH", struct.pack(">f", value)))


@pytest.fixture
def settings_peer(tmp_path):
    """pymodbus behind a pty relay with an SDM630 (id 1) and an SDM230 (id 4); (gateway end, request log)."""
    server_end, gateway_end, log = tmp_path / "peer", tmp_path / "gw", tmp_path / "pymodbus.jsonl"
    relay = Process(python_cmd("tests.ptyrelay", str(server_end), str(gateway_end)), tmp_path / "relay.log")
    relay.spawn()
    wait_until(lambda: os.path.exists(server_end) and os.path.exists(gateway_end), 10, what="pty relay")
    server = Process(python_cmd("tests.e2e.pymodbus_settings", str(server_end), str(log)), tmp_path / "peer.log")
    server.spawn()
    wait_until(lambda: config("-s", str(gateway_end), "show", "1").returncode == 0, 20, interval=0.3,
               what="pymodbus answering")
    yield gateway_end, log
    server.stop()
    relay.stop()


def logged(log_path, fc):
    return [record for record in map(json.loads, log_path.read_text().splitlines()) if record["fc"] == fc]


def test_set_writes_exactly_the_documented_registers_into_pymodbus(settings_peer):
    link, log = settings_peer
    result = config("-s", str(link), "set", "1", "id=9", "baud=19200", "parity=E", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    writes = {(w["slave"], w["address"], w["count"], tuple(w["values"])) for w in logged(log, 16)}
    assert writes == {(1, 0x0014, 2, tuple(words(9.0))),       # id 9
                      (1, 0x001C, 2, tuple(words(3.0))),       # SDM630 baud code 3 = 19200
                      (1, 0x0012, 2, tuple(words(1.0)))}       # parity code 1 = even, 1 stop bit
    assert len(logged(log, 16)) == 3                             # one parameter per message
    assert "Stored, not yet in effect" in result.stdout
    assert "afterwards at id 9 at 19200 8E1 (-c 6)" in result.stdout
    # pymodbus's own store now holds the new values, and show decodes them from it
    shown = config("-s", str(link), "show", "1")
    held = logged(log, 3)[-1]["held"]
    assert [held[str(a)] for a in (0x12, 0x13, 0x14, 0x15, 0x1C, 0x1D)] == words(1.0) + words(9.0) + words(3.0)
    assert "MODBUS id                9 " in shown.stdout
    assert "19200 baud" in shown.stdout and "even parity, 1 stop bit" in shown.stdout


def test_show_decodes_an_sdm230_that_pymodbus_holds(settings_peer):
    link, _ = settings_peer
    result = config("-s", str(link), "--type", "sdm230", "show", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Eastron SDM230 at id 4 at 9600 8N1 (-c 2)"
    assert lines[1].split() == ["serial", "number", "23000004"]
    assert lines[2].startswith("  MODBUS id                4 ")
    assert "9600 baud" in lines[3] and "no parity, 1 stop bit" in lines[4]
    assert all("writable over MODBUS, takes effect after a power cycle" in line for line in lines[2:5])


def test_a_fresh_sdm120_gets_a_new_id_and_baud_and_is_found_and_read(simulator, gateway):
    sim = simulator("sdm120:1", "--baud", "2400", "--set-mode")
    link = str(sim.link)
    shown = config("-s", link, "-c", "1", "show", "1")
    assert shown.returncode == 0, shown.stderr
    assert "Eastron SDM120 at id 1 at 2400 8N1 (-c 1)" in shown.stdout and "2400 baud" in shown.stdout

    result = config("-s", link, "-c", "1", "set", "1", "id=7", "baud=9600", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "set mode" in result.stdout and "Stored, not yet in effect" in result.stdout

    sim.signal(signal.SIGHUP)                                   # the user switches it off and on
    wait_until(lambda: "power-cycled: id 7" in sim.log(), 10, what="the simulated power cycle")
    assert config("-s", link, "-c", "1", "show", "1").returncode == 1      # gone from the old place

    scan = run("sdm.cli.detect", "-s", link, "--comset", "all", "--ids", "1-8", "--turnaround", "150")
    assert scan.returncode == 0, scan.stderr
    found = [line for line in scan.stdout.splitlines() if line.startswith("id ")]
    # a pty carries no parity, so the meter at 9600 8N1 also answers the 9600 8E1 scan
    assert [line.split(",")[-1].strip() for line in found] == ["at 9600 8N1 (-c 2)", "at 9600 8E1 (-c 5)"]
    assert all(line.startswith("id   7: Eastron SDM120 (meter code 0x0020)") for line in found)
    assert "  -c 2 -d sdm120:7" in scan.stdout
    assert "scanned 8 of 8 ids at [1/6] 2400 8N1 (-c 1), 0 meter(s) found" in scan.stderr

    gw = gateway(link, "sdm120:7", "-c", "2")
    reading = gw.get("/last/7").json()
    assert 200 < reading["Voltage"]["L1"] < 260


def test_outside_set_mode_the_sdm120_refuses_and_keeps_its_settings(simulator):
    sim = simulator("sdm120:1")
    result = config("-s", str(sim.link), "set", "1", "id=7", "--yes")
    assert result.returncode == 1
    assert "refuses writes outside its set mode" in result.stdout and "Nothing was written." in result.stdout
    assert "MODBUS id                1 " in config("-s", str(sim.link), "show", "1").stdout


@pytest.mark.parametrize("devices,args,message", [
    ("sdm120:1,sdm630:7", ["set", "1", "id=7", "--yes"], "another device already answers at id 7"),
    ("sdm120:1", ["set", "1", "id=248", "--yes"], "meter id 248 is out of range 1-247"),
    ("sdm120:1", ["set", "1", "id=0", "--yes"], "broadcast"),
    ("sdm120:1", ["set", "1", "baud=19200", "--yes"], "has no baud rate '19200'"),
    ("janitza:26", ["--type", "janitza", "set", "26", "id=5", "--yes"], "change it on the meter's buttons"),
    ("sdm230:3", ["set", "3", "id=5", "--yes"], "not proven: name it with --type"),
])
def test_refusals_are_clear_and_exit_2(simulator, devices, args, message):
    sim = simulator(devices, "--set-mode")
    result = config("-s", str(sim.link), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_without_a_terminal_or_yes_nothing_is_written(simulator):
    sim = simulator("sdm120:1", "--set-mode")
    result = config("-s", str(sim.link), "set", "1", "id=7")
    assert result.returncode == 2 and "no terminal to confirm" in result.stderr
    dry = config("-s", str(sim.link), "set", "1", "id=7", "--dry-run")
    assert dry.returncode == 0 and "01 10 00 14 00 02 04 40 e0 00 00 e7 66" in dry.stdout
    assert "MODBUS id                1 " in config("-s", str(sim.link), "show", "1").stdout


def test_a_port_the_gateway_holds_is_refused_with_a_clear_message(simulator, gateway):
    sim = simulator("sdm120:1")
    gateway(sim.link, "sdm120:1")
    result = config("-s", str(sim.link), "show", "1")
    assert result.returncode == 2
    assert "held by another process, most likely the gateway" in result.stderr and "stop it first" in result.stderr


def test_a_silent_meter_points_to_the_scan(simulator):
    sim = simulator("sdm120:1")
    result = config("-s", str(sim.link), "--timeout", "100", "show", "9")
    assert result.returncode == 1 and "--comset all" in result.stderr


def test_on_a_terminal_the_bar_names_the_line_setting_being_tried():
    import io

    from sdm.cli.detect import Progress
    from sdm.detect import Outcome

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    Progress(2, screen, "[2/6] 9600 8N1 (-c 2)").advance(Outcome(1))
    assert screen.getvalue().startswith("\r[2/6] 9600 8N1 (-c 2) [###############...............] 1/2 ids")
