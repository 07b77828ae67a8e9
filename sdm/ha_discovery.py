"""Home Assistant MQTT discovery: one retained sensor config per measurement of a meter.

Pure functions: the publisher sends what they build.  Each meter is one HA
device; each measurement it has is one sensor reading its value out of the
meter's state JSON (``<base>/<meter>/state``) with a ``value_template``.
Sensors are available only while both the gateway (``<base>/status``) and the
meter (``<base>/<meter>/availability``) say ``online``.  Classes and units are
the ones HA's Energy dashboard accepts: energy in kWh as ``total_increasing``,
power in W as ``measurement``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import __version__
from .config import MeterConfig
from .measurements import describe
from .readings import compact, value_paths
from .topics import Topics

ONLINE = "online"
OFFLINE = "offline"

_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")
_UNIT_SUFFIX = re.compile(r"\s*\([^)]*\)$")


@dataclass(frozen=True)
class SensorClass:
    device_class: Optional[str]
    unit: Optional[str]
    state_class: str
    precision: int


# catalogue unit -> how HA should see it; "" is the power factor (a plain ratio, no unit)
CLASSES: Dict[str, SensorClass] = {
    "V": SensorClass("voltage", "V", "measurement", 1),
    "A": SensorClass("current", "A", "measurement", 2),
    "W": SensorClass("power", "W", "measurement", 0),
    "VA": SensorClass("apparent_power", "VA", "measurement", 0),
    "var": SensorClass("reactive_power", "var", "measurement", 0),
    "": SensorClass("power_factor", None, "measurement", 2),
    "Hz": SensorClass("frequency", "Hz", "measurement", 2),
    "kWh": SensorClass("energy", "kWh", "total_increasing", 3),
    "kvarh": SensorClass(None, "kvarh", "total_increasing", 3),
    "%": SensorClass(None, "%", "measurement", 1),
    "°": SensorClass(None, "°", "measurement", 1),
}

# Shown in HA from the start; every other sensor exists but is disabled until a user enables it.
ENABLED = frozenset(
    [f"{prefix}Phs{p}" for prefix in ("VolLoc", "AmpLoc", "WLoc", "AngLoc") for p in "ABC"]
    + ["TotW", "TotPF", "Freq", "TotkWhImport", "TotkWhExport"])

PATHS = value_paths()


@dataclass(frozen=True)
class DiscoverySettings:
    prefix: str          # HA's discovery prefix, "homeassistant" unless changed there
    gateway_id: str      # this gateway's node id; tells gateways on one broker apart
    topics: Topics       # the gateway's own topics (state, availability, status)


def ha_id(text: str) -> str:
    """An id HA accepts in a discovery topic: letters, digits, ``_`` and ``-`` only."""
    return _NOT_ID.sub("_", text).strip("_") or "_"


def sensor_class(name: str) -> SensorClass:
    return CLASSES[describe(name).unit]


def sensor_name(name: str) -> str:
    """The catalogue description without its unit: 'L1 Voltage (V)' -> 'L1 Voltage'."""
    return _UNIT_SUFFIX.sub("", describe(name).description)


def value_template(name: str) -> str:
    return "{{ value_json." + ".".join(PATHS[name]) + " }}"


def device_block(meter: MeterConfig, settings: DiscoverySettings) -> Dict[str, Any]:
    model = meter.model
    return {
        "identifiers": [f"sdm_{ha_id(settings.gateway_id)}_{ha_id(meter.unique_id)}"],
        "manufacturer": model.manufacturer,
        "model": model.model,
        "name": meter.unique_id,
        "sw_version": f"sdm {__version__}",
    }


def object_id(meter: MeterConfig, name: str) -> str:
    return f"{ha_id(meter.unique_id)}_{name}"


def config_topic(meter: MeterConfig, name: str, settings: DiscoverySettings) -> str:
    return f"{settings.prefix}/sensor/{ha_id(settings.gateway_id)}/{object_id(meter, name)}/config"


def config_filter(settings: DiscoverySettings) -> str:
    """Subscription matching every config this gateway may ever have published."""
    return f"{settings.prefix}/sensor/{ha_id(settings.gateway_id)}/+/config"


def sensor_config(meter: MeterConfig, name: str, settings: DiscoverySettings) -> Dict[str, Any]:
    """The discovery payload of one measurement of one meter."""
    cls = sensor_class(name)
    node = ha_id(settings.gateway_id)
    config = {
        "name": sensor_name(name),
        "unique_id": f"{node}_{object_id(meter, name)}",
        "default_entity_id": f"sensor.{node}_{object_id(meter, name)}".lower(),
        "state_topic": settings.topics.state(meter.unique_id),
        "value_template": value_template(name),
        "state_class": cls.state_class,
        "suggested_display_precision": cls.precision,
        "availability": [
            {"topic": settings.topics.status, "payload_available": ONLINE, "payload_not_available": OFFLINE},
            {"topic": settings.topics.availability(meter.unique_id),
             "payload_available": ONLINE, "payload_not_available": OFFLINE},
        ],
        "availability_mode": "all",
        "device": device_block(meter, settings),
        "origin": {"name": "sdm", "sw_version": __version__},
    }
    if cls.device_class:
        config["device_class"] = cls.device_class
    if cls.unit:
        config["unit_of_measurement"] = cls.unit
    if name not in ENABLED:
        config["enabled_by_default"] = False
    return config


def meter_configs(meter: MeterConfig, settings: DiscoverySettings) -> List[Tuple[str, Dict[str, Any]]]:
    """(config topic, payload) for every measurement the meter's model has."""
    return [(config_topic(meter, name, settings), sensor_config(meter, name, settings))
            for name in meter.model.names]


def encoded_configs(meters: List[MeterConfig], settings: DiscoverySettings) -> Dict[str, bytes]:
    """Every config of every meter, serialized once: topic -> JSON payload."""
    return {topic: compact(config)
            for meter in meters for topic, config in meter_configs(meter, settings)}
