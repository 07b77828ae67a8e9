"""The catalogue of measurements: one IEC-style name, its description and unit.

Names of the 25 values gosdm630 read are kept exactly (VolLocPhsA, AmpLocPhsA,
WLocPhsA, AngLocPhsA, TotkWhImport, ...) so its clients keep working; the
descriptions of those are the original ones (docs/api.md, GET /ws).  The other
names follow the same pattern.  This is the only place that knows them:
meter tables refer to measurements by name, outputs look the text up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

PHASES: Tuple[str, str, str] = ("A", "B", "C")


@dataclass(frozen=True)
class Measurement:
    name: str
    description: str
    unit: str


def _phased(prefix: str, text: str, unit: str) -> Dict[str, Measurement]:
    """Three measurements PrefixPhsA/B/C described as 'L1 text', 'L2 text', ..."""
    found = {}
    for number, phase in enumerate(PHASES, start=1):
        name = f"{prefix}Phs{phase}"
        found[name] = Measurement(name, f"L{number} {text}", unit)
    return found


def _one(name: str, description: str, unit: str) -> Dict[str, Measurement]:
    return {name: Measurement(name, description, unit)}


CATALOGUE: Dict[str, Measurement] = {
    **_phased("VolLoc", "Voltage (V)", "V"),
    **_phased("AmpLoc", "Current (A)", "A"),
    **_phased("WLoc", "Power (W)", "W"),
    **_phased("VALoc", "Apparent Power (VA)", "VA"),
    **_phased("VArLoc", "Reactive Power (var)", "var"),
    **_phased("AngLoc", "Cosphi", ""),
    **_phased("PhAng", "Phase Angle (°)", "°"),
    **_one("TotW", "Total Power (W)", "W"),
    **_one("TotVA", "Total Apparent Power (VA)", "VA"),
    **_one("TotVAr", "Total Reactive Power (var)", "var"),
    **_one("TotPF", "Total Power Factor", ""),
    **_one("TotPhAng", "Total Phase Angle (°)", "°"),
    **_one("TotWImport", "Total Import Power (W)", "W"),
    **_one("TotWExport", "Total Export Power (W)", "W"),
    **_one("Freq", "Frequency of supply voltages", "Hz"),
    **_one("TotkWhImport", "Total Import (kWh)", "kWh"),
    **_one("TotkWhExport", "Total Export (kWh)", "kWh"),
    **_one("TotkWh", "Total Energy (kWh)", "kWh"),
    **_phased("TotkWhImport", "Import (kWh)", "kWh"),
    **_phased("TotkWhExport", "Export (kWh)", "kWh"),
    **_phased("TotkWh", "Total Energy (kWh)", "kWh"),
    **_one("TotkVArhImport", "Total Reactive Import (kvarh)", "kvarh"),
    **_one("TotkVArhExport", "Total Reactive Export (kvarh)", "kvarh"),
    **_one("TotkVArh", "Total Reactive Energy (kvarh)", "kvarh"),
    **_phased("TotkVArhImport", "Reactive Import (kvarh)", "kvarh"),
    **_phased("TotkVArhExport", "Reactive Export (kvarh)", "kvarh"),
    **_phased("TotkVArh", "Total Reactive Energy (kvarh)", "kvarh"),
    **_phased("ThdVol", "Voltage to neutral THD (%)", "%"),
    **_one("ThdVol", "Average voltage to neutral THD (%)", "%"),
}


def describe(name: str) -> Measurement:
    """The catalogue entry of a measurement name (KeyError for an unknown one)."""
    return CATALOGUE[name]
