"""End to end: /metrics of a running gateway, parsed with prometheus_client, against /last/{id}."""

import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import wait_until

DEVICES = "sdm630:1,sdm120:2,janitza:26"
KWH = 3.6e6
# metric -> (key in the Readings JSON, factor to base units); per-phase keys hold {"L1", "L2", "L3"}
PER_PHASE = {
    "sdm_phase_voltage_volts": ("Voltage", 1), "sdm_phase_current_amperes": ("Current", 1),
    "sdm_phase_power_watts": ("Power", 1), "sdm_phase_apparent_power_voltamperes": ("ApparentPower", 1),
    "sdm_phase_reactive_power_voltamperes_reactive": ("ReactivePower", 1), "sdm_phase_power_factor": ("Cosphi", 1),
    "sdm_phase_voltage_thd_ratio": ("THD.VoltageNeutral", 0.01),
    "sdm_phase_import_energy_joules_total": ("Import", KWH), "sdm_phase_export_energy_joules_total": ("Export", KWH),
}
TOTALS = {
    "sdm_power_watts": ("TotalPower", 1), "sdm_import_power_watts": ("ImportPower", 1),
    "sdm_export_power_watts": ("ExportPower", 1), "sdm_apparent_power_voltamperes": ("TotalApparentPower", 1),
    "sdm_reactive_power_voltamperes_reactive": ("TotalReactivePower", 1), "sdm_power_factor": ("TotalCosphi", 1),
    "sdm_frequency_hertz": ("Frequency", 1), "sdm_voltage_thd_average_ratio": ("THD.AvgVoltageNeutral", 0.01),
    "sdm_import_energy_joules_total": ("TotalImport", KWH), "sdm_export_energy_joules_total": ("TotalExport", KWH),
}


def dig(obj, dotted):
    for key in dotted.split("."):
        obj = obj[key]
    return obj


def scrape(gw):
    resp = gw.get("/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(resp.body.decode()) for s in family.samples]


@pytest.fixture
def frozen(simulator, gateway):
    """A gateway whose meters went quiet (simulator stopped): the hub holds still while we compare."""
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES, "--max-failures", "100000")
    sim.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: gw.get("/last").body == gw.get("/last").body, 5, interval=0.3, what="quiet meters")
        yield gw
    finally:
        sim.signal(signal.SIGCONT)


def test_every_reading_metric_equals_last(frozen):
    lasts = {r["UniqueId"]: r for r in frozen.get("/last").json()}
    checked = 0
    for sample in scrape(frozen):
        if sample.name in PER_PHASE:
            key, factor = PER_PHASE[sample.name]
            expected = dig(lasts[sample.labels["meter"]], key)[sample.labels["phase"]]
        elif sample.name in TOTALS:
            key, factor = TOTALS[sample.name]
            expected = dig(lasts[sample.labels["meter"]], key)
        else:
            assert not sample.name.startswith("sdm_") or sample.name.startswith(("sdm_meter_", "sdm_modbus_",
                                                                                  "sdm_bus_")), sample.name
            continue
        assert expected is not None, sample
        assert sample.value == pytest.approx(expected * factor, rel=1e-12), sample
        checked += 1
    assert checked > 60
    for unique_id, reading in lasts.items():
        expected_count = sum(1 for m, (key, _) in PER_PHASE.items()
                             for v in dig(reading, key).values() if v is not None)
        expected_count += sum(1 for m, (key, _) in TOTALS.items() if dig(reading, key) is not None)
        assert expected_count == sum(1 for s in scrape(frozen) if s.labels.get("meter") == unique_id
                                     and (s.name in PER_PHASE or s.name in TOTALS)), unique_id


def test_meter_up_and_bus_counters_match_status(frozen):
    status = frozen.get("/status").json()
    found = {(s.name, s.labels.get("meter"), s.labels.get("kind")): s.value for s in scrape(frozen)}
    for meter in status["ConfiguredMeters"]:
        assert found[("sdm_meter_up", meter["UniqueId"], None)] == 1.0
        assert found[("sdm_meter_readings_total", meter["UniqueId"], None)] == meter["CompleteReadings"]
        assert found[("sdm_modbus_requests_total", meter["UniqueId"], None)] >= meter["Requests"]
    assert found[("sdm_bus_connected", None, None)] == 1.0


def test_a_scrape_sends_nothing_on_the_bus(simulator, gateway):
    sim = simulator("sdm630:1")
    gw = gateway(sim.link, "sdm630:1", "--max-failures", "100000", "--timeout", "5")
    sim.signal(signal.SIGSTOP)
    try:
        # the poller now waits (up to 5 s) for the one reply it asked for; scrapes must not add requests
        time.sleep(0.3)   # let an answer already on the wire be booked first
        before = gw.get("/status").json()["Modbus"]["TotalModbusRequests"]
        for _ in range(20):
            scrape(gw)
        assert gw.get("/status").json()["Modbus"]["TotalModbusRequests"] == before
    finally:
        sim.signal(signal.SIGCONT)
