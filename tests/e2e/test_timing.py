"""End to end: a paced simulator, the gateway's poll interval and slow set (no wall-time asserts),
and start-up errors."""

import socket
import subprocess
import time

import pytest

from tests.support import ROOT, python_cmd, wait_until


def status_of(gateway, device_id):
    meters = gateway.get("/status").json()["ConfiguredMeters"]
    return next(m for m in meters if m["Id"] == device_id)


def test_paced_line_at_19200_8e1_reads_every_value_without_errors(simulator, gateway):
    sim = simulator("sdm630:1,janitza:26", "--baud", "19200", "--parity", "E", "--turnaround-ms", "2")
    gw = gateway(sim.link, "sdm630:1,janitza:26", "-c", "6")
    wait_until(lambda: status_of(gw, 1)["CompleteReadings"] >= 2 and status_of(gw, 26)["CompleteReadings"] >= 2,
               20, what="two readings of each meter")
    status = gw.get("/status").json()
    assert status["Modbus"]["TotalModbusErrors"] == 0
    reading = gw.get("/last/1").json()
    assert 200 < reading["Voltage"]["L3"] < 260 and reading["TotalImport"] > 0
    assert "at 19200 8E1" in sim.log()


def test_interval_holds_one_meter_back_and_slow_set_keeps_values(simulator, gateway):
    sim = simulator("sdm630:1,sdm120:2")
    gw = gateway(sim.link, "sdm630:1,sdm120:2", "--interval", "1=0.5", "--slow", "--pause", "sdm=0",
                 "--pause", "sdm120=0")
    started = time.monotonic()
    one_before, two_before = status_of(gw, 1)["CompleteReadings"], status_of(gw, 2)["CompleteReadings"]
    wait_until(lambda: status_of(gw, 2)["CompleteReadings"] >= two_before + 50, 20, what="50 readings of meter 2")
    time.sleep(1.0)
    one = status_of(gw, 1)["CompleteReadings"] - one_before
    elapsed = time.monotonic() - started
    assert one <= elapsed / 0.5 + 2             # one reading per 0.5 s (+ the window's two ends)
    assert status_of(gw, 2)["CompleteReadings"] - two_before > 2 * one
    reading = gw.get("/last/2").json()
    assert reading["TotalImport"] > 0 and reading["Frequency"] > 49   # slow values stay published


@pytest.mark.parametrize("module,args,message", [
    ("sdm.cli.httpd", ["-d", "sdm:1", "--interval", "9=1"], "meter id 9"),
    ("sdm.cli.httpd", ["-d", "sdm:1", "--slow", "1=soon"], "not a number of seconds"),
    ("sdm.cli.httpd", ["-d", "sdm:1", "-u", "127.0.0.1"], "has no port"),
    ("sdm.cli.httpd", ["-d", "sdm:1", "-u", "BUSY"], "in use"),
    ("simulator", ["--turnaround-ms", "5"], "--turnaround-ms needs --baud"),
    ("simulator", ["--baud", "0"], "--baud must be positive"),
])
def test_bad_options_exit_with_a_message(tmp_path, module, args, message):
    """Timing flags, and the HTTP side that is set up after polling has started."""
    extra = ["--link", str(tmp_path / "tty")] if module == "simulator" else ["-s", str(tmp_path / "tty")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [f"127.0.0.1:{busy.getsockname()[1]}" if arg == "BUSY" else arg for arg in args]
        done = subprocess.run(python_cmd(module, *extra, *args), cwd=ROOT, capture_output=True, text=True,
                              timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
