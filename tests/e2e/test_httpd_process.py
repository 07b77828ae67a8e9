"""sdm630_httpd as a process: command line, unavailable meters, a responsive server."""

import subprocess
import sys

import pytest

from tests.support import wait_until


@pytest.mark.parametrize("args,message", [
    (["-d", "foo:1"], "unknown meter type 'foo'"),
    (["-d", "sdm:0"], "out of range"),
    (["-d", "sdm:1,janitza:1"], "configured twice"),
    (["-d", "sdm"], "is not TYPE:ID"),
    (["-u", "nowhere"], "has no port"),
    (["-f", "Meter"], "must contain %d"),
    (["--pause", "sdm630"], "is not TYPE=MS"),
])
def test_bad_command_line_says_why_and_exits_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "sdm.cli.httpd", "-u", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_meter_type_keywords_are_case_insensitive(simulator, gateway):
    sim = simulator("sdm630:1,janitza:26")
    gw = gateway(sim.link, "SDM:1,Janitza:26")
    meters = gw.get("/status").json()["ConfiguredMeters"]
    assert [(m["Id"], m["Type"], m["Model"]) for m in meters] == [
        (1, "SDM", "Eastron SDM630"), (26, "JANITZA", "Janitza B23-312")]


def test_silent_meter_turns_unavailable_and_others_keep_serving(simulator, gateway):
    sim = simulator("sdm630:1")
    gw = gateway(sim.link, "sdm630:1,sdm120:5", "--timeout", "0.05", "--max-failures", "2",
                 wait_values=False)
    wait_until(lambda: gw.get("/last/5").status == 503, 15, what="meter 5 unavailable")
    resp = gw.get("/last/5")
    assert resp.json() == {"error": "Device 5 is not available.", "age": None}
    assert [r["ModbusDeviceId"] for r in gw.get("/last").json()] == [1]
    status = gw.get("/status").json()
    meter5 = status["ConfiguredMeters"][1]
    assert meter5["Status"] == "unavailable"
    assert meter5["ErrorsByKind"]["timeout"] == meter5["Errors"] >= 2
    wait_until(lambda: gw.get("/status").json()["ConfiguredMeters"][0]["CompleteReadings"] > 2, 15,
               what="meter 1 still read")


def test_http_answers_while_a_read_waits(simulator, gateway):
    """A meter that never answers holds the bus for a 10 s timeout; HTTP must not wait with it."""
    sim = simulator("sdm630:1")
    gw = gateway(sim.link, "sdm630:1,sdm120:9", "--timeout", "10", "--retries", "0", wait_values=False)
    # requests interleave: once meter 1 has been read, the request to meter 9 is out and waiting
    wait_until(lambda: gw.get("/status").json()["ConfiguredMeters"][0]["LastReading"] > 0, 15,
               what="the first read of meter 1")
    before = gw.get("/status").json()["ConfiguredMeters"][1]["Requests"]
    for _ in range(20):
        assert gw.get("/last/1").status == 200
    after = gw.get("/status").json()["ConfiguredMeters"][1]["Requests"]
    assert after - before <= 1, "HTTP requests were answered only between bus exchanges"


def test_missing_adapter_keeps_http_up(tmp_path, gateway):
    gw = gateway(tmp_path / "no-such-tty", "sdm:1", wait_values=False)
    status = gw.get("/status").json()
    assert status["Bus"] == {"Device": str(tmp_path / "no-such-tty"), "Connected": False, "Reconnects": 0}
    assert gw.get("/last/1").status == 503   # nothing can be read without the adapter
    assert gw.get("/last").json() == []


def test_sigterm_stops_cleanly(simulator, gateway):
    sim = simulator("sdm630:1")
    gw = gateway(sim.link, "sdm630:1")
    assert gw.stop(timeout=5) == 0
