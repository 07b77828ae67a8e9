"""sdm_detect as a user runs it: against the simulator on a pty, and with bad input."""

import io
import subprocess

import pytest

from tests.support import ROOT, Process, python_cmd, wait_until


def detect(*args: str) -> subprocess.CompletedProcess:
    """sdm_detect with room for a simulator that a loaded machine starves (see tests/sdm/test_detect.py)."""
    return subprocess.run(python_cmd("sdm.cli.detect", "--turnaround", "150", *args), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_scan_prints_each_meter_and_a_device_list_to_paste(simulator):
    sim = simulator("sdm630:1,sdm220:3,janitza:26,dzg:36,sdm120:120", "--garbage-id", "5")
    result = detect("-s", str(sim.link), "--ids", "1-8,26,36,120,121")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("id   1: Eastron SDM630 (meter code 0x0070), L1 Voltage (V): 2")
    assert lines[1].startswith("id   3: Eastron (model not identified), L1 Voltage (V): 2")
    assert lines[1].endswith("; read it as type sdm")
    assert lines[2].startswith("id   5: answers, but as no known meter (")
    assert lines[3].startswith("id  26: Janitza B23-312, L1 Voltage (V): 2")
    assert lines[4].startswith("id  36: DZG DVH4013, L1 Voltage (V): 2")
    assert lines[5].startswith("id 120: Eastron SDM120 (meter code 0x0020)")
    assert lines[6].startswith("Found 5 meter(s) in ")
    assert lines[7] == "  -d sdm630:1,sdm:3,janitza:26,dzg:36,sdm120:120"
    assert len(lines) == 8
    assert "scanned 12 of 12 ids, 5 meter(s) found" in result.stderr   # plain progress lines off a terminal
    assert "Traceback" not in result.stderr


def test_verbose_lists_silent_ids_too(simulator):
    sim = simulator("sdm630:2")
    result = detect("-s", str(sim.link), "--ids", "1-3", "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "id   1: no answer" and lines[2] == "id   3: no answer"
    assert lines[1].startswith("id   2: Eastron SDM630")


def test_on_a_terminal_progress_is_a_bar_that_is_cleared():
    from sdm.cli.detect import Progress
    from sdm.detect import Found, Outcome

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    progress = Progress(4, screen)
    progress.advance(Outcome(1))
    progress.advance(Outcome(2, Found(2, "sdm630", "Eastron SDM630", "VolLocPhsA", 230.0), answered=True))
    progress.clear()
    assert screen.getvalue() == ("\r[#######.......................] 1/4 ids, 0 found, at id 1"
                                 "\r[###############...............] 2/4 ids, 1 found, at id 2\r\x1b[K")


def test_a_silent_bus_says_so_and_exits_1(simulator):
    sim = simulator("sdm630:200")
    result = detect("-s", str(sim.link), "--ids", "1-10")
    assert result.returncode == 1
    assert result.stdout.startswith("No meter found on 10 ids in ")
    assert "Traceback" not in result.stderr


@pytest.fixture
def gateways(tmp_path):
    """The simulator as both kinds of network gateway; their ports (tcp://..., rtu+tcp://...)."""
    port_file = tmp_path / "ports"
    sim = Process(python_cmd("simulator", "-d", "sdm630:1,janitza:26", "--tcp", "127.0.0.1:0",
                             "--rtu-tcp", "127.0.0.1:0", "--port-file", str(port_file)), tmp_path / "sim.log")
    sim.spawn()
    wait_until(lambda: port_file.exists() or sim.proc.poll() is not None, 15, what="simulator ports")
    assert sim.proc.poll() is None, sim.log()
    yield port_file.read_text().split()
    sim.stop()


def test_scan_through_network_gateways_of_both_kinds(gateways):
    for url in gateways:
        result = detect("-s", url, "--ids", "1-3,26")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "  -d sdm630:1,janitza:26", url
        assert "Traceback" not in result.stderr


def test_a_gateway_in_the_other_mode_says_what_to_check(gateways):
    tcp, rtu_tcp = gateways
    advice = "its mode (rtu+tcp:// for a transparent gateway, tcp:// for Modbus TCP)"
    silent = detect("-s", rtu_tcp.replace("rtu+tcp://", "tcp://"), "--ids", "1-2")
    assert silent.returncode == 1 and advice in silent.stdout
    # the simulated Modbus TCP gateway hangs up on RTU bytes it cannot read as MBAP
    hung_up = detect("-s", tcp.replace("tcp://", "rtu+tcp://"), "--ids", "1-2")
    assert hung_up.returncode == 2 and "connection closed by the gateway" in hung_up.stderr
    assert advice in hung_up.stderr and "Traceback" not in hung_up.stderr


@pytest.mark.parametrize("args, message", [
    (["-s", "tcp://127.0.0.1:1"], "sdm_detect: cannot connect to tcp://127.0.0.1:1: connection refused"),
    (["-s", "rtu+tcp://127.0.0.1"], "a transparent gateway has no standard port"),
    (["-s", "udp://127.0.0.1:502"], "unknown scheme"),
    (["-s", "/nonexistent/ttyUSB9"], "sdm_detect: cannot open /nonexistent/ttyUSB9"),
    (["-s", "/dev/null", "--ids", "0-300"], "meter id 0 is out of range 1-247"),
    (["-s", "/dev/null", "--ids", "9-3"], "id range '9-3' runs backwards"),
    (["-s", "/dev/null", "--turnaround", "-5"], "--turnaround -5 ms is not within"),
])
def test_bad_input_gets_a_clear_message_and_exit_2(args, message):
    result = detect(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_comset_is_refused_by_the_parser():
    result = detect("-c", "9")
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr
