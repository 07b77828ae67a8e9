"""The Readings JSON object of gosdm630, built from a meter's measurement values.

The first fourteen keys are gosdm630's, in its order and with its meaning
(docs/api.md, the Readings object), so transforms like ``JSON.parse(input).Power.L1`` keep
working.  Every other measurement of the catalogue gets an extra key after
them.  A value the meter has not given is ``null``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .measurements import PHASES

Spec = Union[str, Dict[str, Any]]


def _phased(prefix: str) -> Dict[str, str]:
    return {f"L{n}": f"{prefix}Phs{phase}" for n, phase in enumerate(PHASES, start=1)}


LAYOUT: List[Tuple[str, Spec]] = [
    # gosdm630's keys
    ("Power", _phased("WLoc")),
    ("Voltage", _phased("VolLoc")),
    ("Current", _phased("AmpLoc")),
    ("Cosphi", _phased("AngLoc")),
    ("Import", _phased("TotkWhImport")),
    ("TotalImport", "TotkWhImport"),
    ("Export", _phased("TotkWhExport")),
    ("TotalExport", "TotkWhExport"),
    ("THD", {"VoltageNeutral": _phased("ThdVol"), "AvgVoltageNeutral": "ThdVol"}),
    ("Frequency", "Freq"),
    # ours
    ("ApparentPower", _phased("VALoc")),
    ("ReactivePower", _phased("VArLoc")),
    ("PhaseAngle", _phased("PhAng")),
    ("TotalPower", "TotW"),
    ("TotalApparentPower", "TotVA"),
    ("TotalReactivePower", "TotVAr"),
    ("TotalCosphi", "TotPF"),
    ("TotalPhaseAngle", "TotPhAng"),
    ("ImportPower", "TotWImport"),
    ("ExportPower", "TotWExport"),
    ("Energy", _phased("TotkWh")),
    ("TotalEnergy", "TotkWh"),
    ("ReactiveImport", _phased("TotkVArhImport")),
    ("TotalReactiveImport", "TotkVArhImport"),
    ("ReactiveExport", _phased("TotkVArhExport")),
    ("TotalReactiveExport", "TotkVArhExport"),
    ("ReactiveEnergy", _phased("TotkVArh")),
    ("TotalReactiveEnergy", "TotkVArh"),
]

ZERO_TIME = "0001-01-01T00:00:00Z"


def finite_or_none(value: Optional[float]) -> Optional[float]:
    """NaN and infinities are not numbers a client can use: they become null."""
    if value is None or not math.isfinite(value):
        return None
    return value


def rfc3339(timestamp: float) -> str:
    """Local time with offset, like Go's RFC 3339 output; the zero time for 0."""
    if not timestamp:
        return ZERO_TIME
    return datetime.fromtimestamp(timestamp, timezone.utc).astimezone().isoformat(timespec="microseconds")


def _fill(spec: Spec, values: Mapping[str, Optional[float]]) -> Any:
    if isinstance(spec, str):
        return finite_or_none(values.get(spec))
    return {key: _fill(inner, values) for key, inner in spec.items()}


def readings(unique_id: str, device_id: int, timestamp: float,
             values: Mapping[str, Optional[float]]) -> Dict[str, Any]:
    """The Readings object (a dict in gosdm630's key order)."""
    obj: Dict[str, Any] = {
        "UniqueId": unique_id,
        "Timestamp": rfc3339(timestamp),
        "Unix": int(timestamp),
        "ModbusDeviceId": device_id,
    }
    for key, spec in LAYOUT:
        obj[key] = _fill(spec, values)
    return obj


def compact(obj: Any) -> bytes:
    """Compact JSON, as Go's json.Marshal writes it; NaN is refused, never sent."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def dumps(obj: Any) -> bytes:
    """Compact JSON with a closing newline, as Go's json.Encoder writes it."""
    return compact(obj) + b"\n"


def layout_names(spec: Optional[Spec] = None) -> List[str]:
    """Every measurement name the layout places (for the check that none is missing)."""
    if spec is None:
        return [name for _, inner in LAYOUT for name in layout_names(inner)]
    if isinstance(spec, str):
        return [spec]
    return [name for inner in spec.values() for name in layout_names(inner)]


def value_paths(spec: Optional[Spec] = None, keys: Tuple[str, ...] = ()) -> Dict[str, Tuple[str, ...]]:
    """Where each measurement sits in the Readings object, e.g. WLocPhsA -> ("Power", "L1")."""
    if spec is None:
        return {name: path for key, inner in LAYOUT for name, path in value_paths(inner, (key,)).items()}
    if isinstance(spec, str):
        return {spec: keys}
    return {name: path for key, inner in spec.items() for name, path in value_paths(inner, keys + (key,)).items()}
