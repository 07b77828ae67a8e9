"""The Prometheus collector, in process: what it reports comes from the hub and only from it."""

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sdm.hub import UNAVAILABLE, Hub, MeterConfig
from sdm.meters.registry import lookup
from sdm.metrics import registry_for
from simulator.physics import Physics


def samples(hub):
    text = generate_latest(registry_for(hub)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def hub_with(*devices):
    configs = [MeterConfig(device_id, key.upper(), lookup(key), f"M{device_id}") for key, device_id in devices]
    hub = Hub(configs)
    for config in configs:
        values = Physics(config.model.phases, seed=config.device_id).sample()
        hub.publish(config.name, {n: v for n, v in values.items() if n in config.model.names}, complete=True)
    return hub


def test_values_in_base_units_with_phase_labels_and_totals_apart():
    hub = hub_with(("sdm630", 1))
    found = samples(hub)
    values = hub.meters["M1"].values
    labels = (("meter", "M1"), ("model", "SDM630"))
    assert found[("sdm_phase_voltage_volts", labels + (("phase", "L2"),))] == values["VolLocPhsB"]
    assert found[("sdm_phase_voltage_thd_ratio", labels + (("phase", "L3"),))] == values["ThdVolPhsC"] * 0.01
    assert found[("sdm_import_energy_joules_total", labels)] == values["TotkWhImport"] * 3.6e6
    assert found[("sdm_power_watts", labels)] == values["TotW"]
    assert not [key for key in found if key[0] == "sdm_power_watts" and ("phase", "total") in key[1]]
    assert found[("sdm_meter_up", labels)] == 1.0


def test_an_unavailable_meter_is_down_and_reports_no_stale_values():
    hub = hub_with(("sdm630", 1), ("sdm120", 2))
    hub.set_status("M2", UNAVAILABLE)
    found = samples(hub)
    assert found[("sdm_meter_up", (("meter", "M2"), ("model", "SDM120")))] == 0.0
    assert not [key for key in found if ("meter", "M2") in key[1] and key[0].startswith("sdm_phase_")]
    assert [key for key in found if ("meter", "M1") in key[1] and key[0].startswith("sdm_phase_")]


def test_a_single_phase_meter_has_only_l1_and_no_missing_values_as_zero():
    found = samples(hub_with(("sdm120", 2)))
    phases = {dict(labels).get("phase") for name, labels in found if name.startswith("sdm_phase_")}
    assert phases == {"L1"}
    assert ("sdm_phase_export_energy_joules_total", (("meter", "M2"), ("model", "SDM120"), ("phase", "L1"))) \
        not in found   # the SDM120 has no per-phase export register


def test_bus_counters_by_kind_and_a_scrape_touches_nothing():
    hub = hub_with(("dzg", 36))
    for kind in (None, None, "timeout", "crc"):
        hub.count("M36", kind)
    before = (hub.meters["M36"].requests, dict(hub.meters["M36"].errors), hub.meters["M36"].timestamp)
    found = samples(hub)
    labels = (("meter", "M36"), ("model", "DVH4013"))
    assert found[("sdm_modbus_requests_total", labels)] == 4
    assert found[("sdm_modbus_errors_total", (("kind", "timeout"),) + labels)] == 1
    assert found[("sdm_modbus_errors_total", (("kind", "short"),) + labels)] == 0
    assert (hub.meters["M36"].requests, dict(hub.meters["M36"].errors), hub.meters["M36"].timestamp) == before
