"""End to end: the simulator on a pty, sdm630_httpd as a process, HTTP as a user sends it."""

import math

import pytest

from sdm.meters.registry import MODELS, lookup
from sdm.readings import layout_names
from sdm.sanity import COUNTERS
from tests.support import GOSDM_KEYS, wait_until

ALL_TYPES = "sdm630:1,sdm120:2,sdm220:3,sdm230:4,sdm530:5,janitza:26,dzg:36"


@pytest.fixture
def bus(simulator, gateway):
    sim = simulator(ALL_TYPES)
    return gateway(sim.link, ALL_TYPES)


def flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, obj


def test_every_meter_type_reads_exactly_its_measurements(bus):
    from sdm.readings import LAYOUT
    paths = {}
    for key, spec in LAYOUT:
        for path, name in flatten({key: spec}):
            paths[name] = path
    for type_id in ALL_TYPES.split(","):
        type_name, id_text = type_id.split(":")
        model = lookup(type_name)
        reading = bus.get(f"/last/{id_text}").json()
        raw = dict(flatten(bus.get(f"/last/{id_text}?raw=1").json()))
        assert list(reading)[:14] == GOSDM_KEYS
        assert reading["ModbusDeviceId"] == int(id_text)
        assert reading["UniqueId"] == f"Instrument{id_text}"
        values = dict(flatten(reading))
        for name in layout_names():
            value = values[paths[name]]
            if name in COUNTERS and raw[paths[name]] == 0.0:
                assert value is None, (type_name, name, value)    # a counter that never moved: no 0
            elif name in model.names:
                assert isinstance(value, float) and math.isfinite(value), (type_name, name, value)
            else:
                assert value is None, (type_name, name, value)


def test_readings_are_physically_plausible_and_alive(bus):
    first = bus.get("/last/1").json()
    for phase in ("L1", "L2", "L3"):
        assert 200 < first["Voltage"][phase] < 260
        assert -1.0 <= first["Cosphi"][phase] <= 1.0
        p = first["Power"][phase]
        u, i, pf = first["Voltage"][phase], first["Current"][phase], first["Cosphi"][phase]
        assert p == pytest.approx(u * i * pf, rel=0.05, abs=5)
    assert 49.5 < first["Frequency"] < 50.5
    later = wait_until(lambda: (r := bus.get("/last/1").json())["Unix"] >= first["Unix"] and
                       r["Power"] != first["Power"] and r, 10, what="changing power")
    assert later["TotalImport"] >= first["TotalImport"]


def test_last_lists_available_meters_in_id_order(bus):
    body = bus.get("/last")
    assert body.status == 200
    assert body.headers["content-type"] == "application/json; charset=UTF-8"
    assert body.headers["access-control-allow-origin"] == "*"
    assert [r["ModbusDeviceId"] for r in body.json()] == [1, 2, 3, 4, 5, 26, 36]


def test_minute_average_lies_within_the_observed_range(bus):
    avg = bus.get("/minuteavg/1").json()
    assert 200 < avg["Voltage"]["L1"] < 260
    assert avg["TotalImport"] > 0
    assert [r["ModbusDeviceId"] for r in bus.get("/minuteavg").json()] == [1, 2, 3, 4, 5, 26, 36]


@pytest.mark.parametrize("path,status", [
    ("/last/9", 404), ("/minuteavg/9", 404), ("/last/abc", 404), ("/last/0", 400), ("/last/248", 400),
    ("/last/99999999999999999999", 400), ("/minuteavg/-1", 404), ("/nothing", 404), ("/last/1/2", 404),
])
def test_errors_are_json_with_the_right_status(bus, path, status):
    resp = bus.get(path)
    assert resp.status == status
    assert resp.headers["content-type"].startswith("application/json")
    assert isinstance(resp.json()["error"], str)


def test_wrong_method_is_a_json_405(bus):
    resp = bus.get("/last/1", method="DELETE")
    assert resp.status == 405
    assert "error" in resp.json()


def test_trailing_slash_redirects(bus):
    resp = bus.get("/last/")
    assert resp.status == 301
    assert resp.headers["location"].endswith("/last")


def test_status_counts_requests_per_meter(bus):
    status = bus.get("/status").json()
    modbus = status["Modbus"]
    assert modbus["TotalModbusRequests"] == sum(m["Requests"] for m in status["ConfiguredMeters"]) > 0
    assert modbus["TotalModbusErrors"] == 0
    assert [(m["Id"], m["Type"], m["Status"]) for m in status["ConfiguredMeters"]] == [
        (1, "SDM630", "available"), (2, "SDM120", "available"), (3, "SDM220", "available"),
        (4, "SDM230", "available"), (5, "SDM530", "available"), (26, "JANITZA", "available"),
        (36, "DZG", "available")]
    assert status["Bus"]["Connected"] is True


def test_all_models_are_covered():
    assert {t.split(":")[0] for t in ALL_TYPES.split(",")} == set(MODELS)
