"""End to end: sdm_doctor as a process against the simulator on a pty (a clean bus, a wrong line
setting found by --try-comsets, --json, --capture, --config) and its answers to bad input.

Another master is also diagnosed on the simulator's virtual multi-drop bus, with a foreign master
polling like an inverter.  Duplicate ids, noise and a meter needing quiet are diagnosed on a fake
line in tests/sdm/test_doctor.py: the simulator cannot put two meters at one id or length-dependent
noise on a line."""

import json
import subprocess
import sys

from tests.sdm.test_doctor import read_pcapng
from tests.support import ROOT


def doctor(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "sdm.cli.doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_clean_bus_no_problem_found_with_figures_and_capture(simulator, tmp_path):
    sim = simulator("sdm630:1,sdm120:2", "--baud", "9600")
    capture = tmp_path / "bus.pcapng"
    done = doctor("-s", str(sim.link), "-d", "sdm630:1,sdm120:2", "--duration", "4", "--capture", str(capture))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "No problem found." in done.stdout
    assert "sdm630:1" in done.stdout and "readings/s" in done.stdout
    packets = read_pcapng(capture.read_bytes())
    assert sum(p[3] == "ok" for p in packets) >= 10 and not any(p[3].startswith("stray") for p in packets)


def test_wrong_baud_rate_is_named_with_the_setting_that_fits(simulator):
    sim = simulator("sdm630:1", "--baud", "19200")
    done = doctor("-s", str(sim.link), "-c", "2", "-d", "sdm630:1", "--duration", "2", "--try-comsets", "2,3,4",
                  "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert [f["Code"] for f in result["Findings"]] == ["comset"]
    assert "19200 8N1 (-c 3)" in result["Findings"][0]["Text"]
    assert "2400" not in result["Findings"][0]["Text"]


def test_the_bus_of_a_configuration_file(simulator, tmp_path):
    sim = simulator("janitza:26", "--baud", "9600")
    path = tmp_path / "gw.toml"
    path.write_text(f'[[bus]]\nname = "a"\nport = "/dev/null"\n[[bus.meter]]\ntype = "sdm630"\nid = 1\n'
                    f'[[bus]]\nname = "b"\nport = "{sim.link}"\n[[bus.meter]]\ntype = "janitza"\nid = 26\n'
                    f'name = "pv"\n')
    done = doctor("--config", str(path), "--bus", "b", "--duration", "2", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    assert [m["Name"] for m in json.loads(done.stdout)["Meters"]] == ["pv"]


def test_bad_input_is_a_message_not_a_traceback(tmp_path):
    cases = [(["-d", "sdm:1", "--config", "x.toml"], "exactly one of"),
             (["-s", "tcp://127.0.0.1:1", "-d", "sdm:1", "--duration", "1"], "Modbus TCP gateway hides"),
             (["-s", str(tmp_path / "none"), "-d", "sdm:1", "--duration", "1"], "sdm_doctor:"),
             (["-d", "sdm:1", "--duration", "0"], "--duration"),
             (["-d", "sdm:1", "--try-comsets", "9"], "invalid choice"),
             (["-d", "nosuch:1"], "sdm_doctor:")]
    for args, message in cases:
        done = doctor(*args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_another_master_on_a_multidrop_bus_is_named(simulator):
    sim = simulator("sdm630:1", "--bus-endpoints", "1", "--baud", "9600", "--master", "sdm630:1@14")
    done = doctor("-s", str(sim.link), "-d", "sdm630:1", "--duration", "4", "--json")
    assert done.returncode == 1, done.stderr + done.stdout
    codes = [f["Code"] for f in json.loads(done.stdout)["Findings"]]
    assert "another_master" in codes, done.stdout
