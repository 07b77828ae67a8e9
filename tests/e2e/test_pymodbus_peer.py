"""pymodbus as a serial server, loaded with known values at the reference
addresses, is read correctly by sdm630_httpd end to end over HTTP.
(The other direction, pymodbus reading our simulator: tests/simulator.)"""

import os

import pytest

from tests.e2e import pymodbus_meters as peer
from tests.support import Gateway, Process, python_cmd, wait_until


@pytest.fixture
def pymodbus_bus(tmp_path):
    """A pty cable with pymodbus serving on one end; the gateway end's path."""
    server_end, gateway_end = tmp_path / "peer", tmp_path / "gw"
    relay = Process(python_cmd("tests.ptyrelay", str(server_end), str(gateway_end)), tmp_path / "relay.log")
    relay.spawn()
    wait_until(lambda: os.path.exists(server_end) and os.path.exists(gateway_end), 10, what="pty relay")
    server = Process(python_cmd("tests.e2e.pymodbus_meters", str(server_end)), tmp_path / "pymodbus.log")
    server.spawn()
    yield gateway_end
    server.stop()
    relay.stop()


def test_gateway_reads_pymodbus_meters_over_http(pymodbus_bus, tmp_path):
    gw = Gateway(str(pymodbus_bus), "sdm:1,janitza:26,dzg:36", [], tmp_path / "httpd.log").start()
    try:
        sdm, janitza, dzg = (gw.get(f"/last/{i}").json() for i in (1, 26, 36))
    finally:
        gw.stop()
    assert_peer_values(sdm, janitza, dzg)


def assert_peer_values(sdm, janitza, dzg):
    """The Readings of the peer's three meters hold exactly the values it serves."""
    assert sdm["Voltage"] == {"L1": 231.5, "L2": 229.25, "L3": 233.75}
    assert sdm["Current"] == {"L1": 1.5, "L2": 2.25, "L3": 3.125}
    assert sdm["Power"] == {"L1": 330.5, "L2": -480.25, "L3": 700.0}
    assert sdm["Cosphi"] == {"L1": 0.95, "L2": -0.875, "L3": 0.5}
    assert sdm["Import"] == {"L1": 400.5, "L2": 500.25, "L3": 333.75}
    assert sdm["Export"] == {"L1": 10.5, "L2": 20.25, "L3": 290.5}
    assert (sdm["TotalImport"], sdm["TotalExport"], sdm["Frequency"], sdm["TotalPower"]) == (
        1234.5, 321.25, 49.96875, 550.25)
    assert sdm["THD"] == {"VoltageNeutral": {"L1": 1.25, "L2": 2.5, "L3": 3.75}, "AvgVoltageNeutral": 2.5}
    assert sdm["ApparentPower"] == {"L1": 0.0, "L2": 0.0, "L3": 0.0}   # registers present, value 0

    assert janitza["Voltage"] == {"L1": 230.5, "L2": 231.5, "L3": 232.5}
    assert janitza["Power"] == {"L1": 1000.5, "L2": 1100.5, "L3": -1200.5}
    assert janitza["Cosphi"] == {"L1": 0.5, "L2": 0.75, "L3": -0.25}
    assert janitza["Import"] == {"L1": 1.5, "L2": 2.5, "L3": 3.5}        # Wh / 1000
    assert janitza["Export"] == {"L1": 0.1, "L2": 0.2, "L3": 0.3}
    assert (janitza["TotalImport"], janitza["TotalExport"]) == (7.5, 0.6)
    assert (janitza["Frequency"], janitza["TotalPower"]) == (50.03125, 900.5)

    assert dzg["Voltage"] == {"L1": 230.12, "L2": 229.87, "L3": 231.01}  # / 100
    assert dzg["Current"] == {"L1": 1.234, "L2": 2.345, "L3": 3.456}     # / 1000
    assert dzg["Import"] == {"L1": 400.001, "L2": 400.002, "L3": 434.564}
    assert dzg["Export"] == {"L1": 1.0, "L2": 2.0, "L3": 4.654}
    assert (dzg["TotalImport"], dzg["TotalExport"]) == (1234.567, 7.654)
    assert (dzg["ImportPower"], dzg["ExportPower"], dzg["TotalCosphi"], dzg["Frequency"]) == (
        1234.5, 67.8, 0.987, 50.012)
    assert dzg["Power"] == {"L1": None, "L2": None, "L3": None}


def test_expected_values_cover_every_register_read():
    """The peer's value tables name every address our tables read (no silent zeros)."""
    from sdm.meters.registry import lookup
    for type_name, table in (("sdm630", peer.SDM630), ("janitza", peer.JANITZA), ("dzg", peer.DZG)):
        read = {reg.address for reg in lookup(type_name).registers}
        extra = {reg.address for reg in lookup(type_name).registers if reg.name.startswith(("VA", "VAr", "Tot"))}
        assert set(table) <= read
        assert read - set(table) <= extra
