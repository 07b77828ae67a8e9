"""Home Assistant discovery payloads: what HA requires of each sensor class, for every meter model."""

import re

from hypothesis import assume, given
from hypothesis import strategies as st

from sdm.ha_discovery import DiscoverySettings, encoded_configs, ha_id, meter_configs
from sdm.hub import MeterConfig
from sdm.meters.registry import MODELS
from sdm.readings import readings
from sdm.topics import Topics
from simulator.physics import Physics

# HA's sensor rules (developer docs, sensor device classes): units each class accepts, state classes
UNITS = {
    "voltage": {"V", "mV", "kV"}, "current": {"A", "mA"}, "power": {"W", "kW"},
    "apparent_power": {"VA", "kVA"}, "reactive_power": {"var", "kvar"}, "frequency": {"Hz", "kHz"},
    "energy": {"Wh", "kWh", "MWh"}, "power_factor": {None, "%"},
}
STATE_CLASSES = {"energy": {"total", "total_increasing"}}
HA_ID = re.compile(r"[A-Za-z0-9_-]+")
TEMPLATE = re.compile(r"\{\{ value_json\.([A-Za-z0-9_.]+) \}\}")

SETTINGS = DiscoverySettings("homeassistant", "sdm630", Topics("sdm630"))


def meter(model_key: str, device_id: int = 1, unique_id: str = "Instrument1") -> MeterConfig:
    return MeterConfig(device_id, model_key.upper(), MODELS[model_key], unique_id)


def all_configs(settings=SETTINGS):
    for key in MODELS:
        for topic, config in meter_configs(meter(key), settings):
            yield key, topic, config


def test_every_config_has_what_ha_requires_for_its_class():
    for key, topic, config in all_configs():
        assert config["state_topic"] == "sdm630/Instrument1/state"
        assert config["name"] and config["unique_id"]
        assert config["default_entity_id"].startswith("sensor.")
        assert re.fullmatch(r"sensor\.[a-z0-9_]+", config["default_entity_id"])
        assert "object_id" not in config
        device_class = config.get("device_class")
        unit = config.get("unit_of_measurement")
        if device_class is not None:
            assert unit in UNITS[device_class], (key, topic, unit)
            assert config["state_class"] in STATE_CLASSES.get(device_class, {"measurement"}), (key, topic)
        assert config["state_class"] in {"measurement", "total", "total_increasing"}
        device = config["device"]
        assert device["identifiers"] and device["manufacturer"] and device["model"] and device["name"]
        assert device["sw_version"]
        assert config["availability_mode"] == "all"
        assert [a["topic"] for a in config["availability"]] == ["sdm630/status", "sdm630/Instrument1/availability"]


def test_energy_and_power_pass_the_energy_dashboard_rules():
    for _, _, config in all_configs():
        if config["unique_id"].endswith(("TotkWhImport", "TotkWhExport")):
            assert (config["device_class"], config["unit_of_measurement"], config["state_class"]) == \
                ("energy", "kWh", "total_increasing")
        if config["unique_id"].endswith(("_TotW", "WLocPhsA")):
            assert (config["device_class"], config["unit_of_measurement"], config["state_class"]) == \
                ("power", "W", "measurement")
    found = {config["unique_id"].split("_", 2)[-1]: config for _, _, config in all_configs()}
    assert found["TotkWhImport"].get("enabled_by_default", True) is True
    assert found["ThdVolPhsA"]["enabled_by_default"] is False


def test_value_templates_read_the_right_value_out_of_the_state_json():
    for key, model in MODELS.items():
        values = {name: value for name, value in Physics(model.phases, seed=3).sample().items()
                  if name in model.names}
        state = readings("Instrument1", 1, 1.0, values)
        for _, config in meter_configs(meter(key), SETTINGS):
            path = TEMPLATE.fullmatch(config["value_template"]).group(1).split(".")
            found = state
            for step in path:
                found = found[step]
            name = config["unique_id"].split("_", 2)[-1]
            assert found == values[name], (key, name)


def test_one_device_per_meter():
    configs = [c for m in (meter("sdm630", 1, "A"), meter("sdm120", 2, "B"))
               for _, c in meter_configs(m, SETTINGS)]
    devices = {c["device"]["identifiers"][0] for c in configs}
    assert len(devices) == 2
    assert len({c["unique_id"] for c in configs}) == len(configs)


@given(gateway=st.text(min_size=1, max_size=20), other=st.text(min_size=1, max_size=20),
       unique_id=st.text(min_size=1, max_size=20))
def test_topics_are_valid_and_gateways_never_share_ids(gateway, other, unique_id):
    assume(ha_id(gateway) != ha_id(other))
    ids = {}
    for node in (gateway, other):
        settings = DiscoverySettings("homeassistant", node, Topics("sdm630"))
        configs = encoded_configs([meter("sdm630", 1, unique_id), meter("sdm120", 2, unique_id + "x")], settings)
        for topic in configs:
            prefix, component, node_id, object_id, last = topic.split("/")
            assert (prefix, component, last) == ("homeassistant", "sensor", "config")
            assert HA_ID.fullmatch(node_id) and HA_ID.fullmatch(object_id)
        ids[node] = set(configs)
    assert not ids[gateway] & ids[other]
