"""Type keyword (the TYPE of ``-d TYPE:ID``) -> meter model."""

from __future__ import annotations

from typing import Dict, List, Tuple

from . import dzg, eastron, janitza
from .model import MeterModel

MODELS: Dict[str, MeterModel] = {
    model.key: model for family in (eastron, janitza, dzg) for model in family.MODELS
}

# gosdm630's single "SDM" type read every Eastron model with the SDM630 map;
# keep the keyword so old command lines keep working.
ALIASES: Dict[str, str] = {"sdm": "sdm630"}


def lookup(keyword: str) -> MeterModel:
    """The model for a type keyword, case-insensitive; ValueError names the known ones."""
    key = keyword.strip().lower()
    key = ALIASES.get(key, key)
    try:
        return MODELS[key]
    except KeyError:
        known = ", ".join(sorted(set(MODELS) | set(ALIASES)))
        raise ValueError(f"unknown meter type {keyword!r} (known: {known})") from None


MAX_SLAVE_ID = 247


def parse_slave_id(text: str) -> int:
    """A MODBUS slave id 1-247; ValueError with a readable message otherwise."""
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):   # int() would take "+1", "1_0" and non-ASCII digits
        raise ValueError(f"meter id {text!r} is not a number")
    number = int(digits)
    if not 1 <= number <= MAX_SLAVE_ID:
        raise ValueError(f"meter id {number} is out of range 1-{MAX_SLAVE_ID}")
    return number


def parse_device_list(text: str) -> List[Tuple[str, MeterModel, int]]:
    """``janitza:26,sdm:1`` -> [(type name as written, upper case), model, id), ...].

    Unlike gosdm630 a repeated id is an error, not a silent override.
    """
    devices: List[Tuple[str, MeterModel, int]] = []
    seen = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        keyword, sep, id_text = item.partition(":")
        if not sep:
            raise ValueError(f"device {item!r} is not TYPE:ID")
        model = lookup(keyword)
        slave = parse_slave_id(id_text)
        if slave in seen:
            raise ValueError(f"meter id {slave} is configured twice")
        seen.add(slave)
        devices.append((keyword.strip().upper(), model, slave))
    if not devices:
        raise ValueError("no devices configured")
    return devices
