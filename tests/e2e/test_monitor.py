"""sdm630_monitor as a process against a real gateway reading the simulator."""

import re
import signal

from tests.support import Process, python_cmd, wait_until

DEVICES = "sdm630:1,janitza:26"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d device 1: L1 -?\d+\.\d W  L2 -?\d+\.\d W  "
                  r"L3 -?\d+\.\d W  total -?\d+\.\d W$", re.M)


def start_monitor(tmp_path, gw, *args: str) -> Process:
    monitor = Process(python_cmd("sdm.cli.monitor", "-u", f"127.0.0.1:{gw.port}", "-t", "5", *args),
                      tmp_path / "monitor.log")
    monitor.spawn()
    return monitor


def lines(monitor: Process) -> int:
    return len(LINE.findall(monitor.log()))


def test_monitor_prints_power_lines_and_survives_a_gateway_restart(simulator, gateway, tmp_path):
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES)
    monitor = start_monitor(tmp_path, gw, "-d", "1")
    try:
        wait_until(lambda: lines(monitor) >= 3, 15, what="three power lines for device 1")
        assert "device 26" not in monitor.log()
        gw.kill()
        wait_until(lambda: "lost connection" in monitor.log(), 15, what="the monitor to notice")
        before = lines(monitor)
        gw.restart()
        wait_until(lambda: lines(monitor) >= before + 3, 20, what="power lines after the restart")
        log = monitor.log()
        assert log.count("lost connection") == 1 and log.count("reconnected to") == 1
        assert monitor.proc.poll() is None
        monitor.signal(signal.SIGINT)
        assert monitor.proc.wait(10) == 0
        assert "Traceback" not in monitor.log()
    finally:
        monitor.stop()


def test_monitor_says_an_unknown_device_is_not_configured_and_keeps_waiting(simulator, gateway, tmp_path):
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES)
    monitor = start_monitor(tmp_path, gw, "-d", "9", "-c", "all")
    try:
        wait_until(lambda: "device 9 is not configured" in monitor.log(), 15, what="the unknown-device notice")
        wait_until(lambda: gw.get("/status").json()["UptimeSeconds"] > 3, 10, what="a few status updates")
        assert monitor.proc.poll() is None
        assert monitor.log().count("not configured") == 1
        assert "Traceback" not in monitor.log()
    finally:
        monitor.stop()
