"""Living, physically consistent values for a virtual meter.

Per phase: a voltage near 230 V, a current that drifts between a base load
and peaks, a power factor; P = U * I * PF, S = U * I, Q = sqrt(S^2 - P^2).
One phase of a three-phase meter feeds in (a PV inverter on L3), so export
counters move too.  Energy counters integrate power over the time between two
requests: import while P > 0, export while P < 0.  A seed makes it repeatable.
``energy_drop_at`` halves every energy counter once, that many seconds after
the start: a glitching or swapped meter, to test what outputs make of a drop.
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable, Dict, Optional

PHASE_LETTERS = "ABC"


class Physics:
    def __init__(self, phases: int = 3, seed: Optional[int] = None, clock: Callable[[], float] = time.monotonic,
                 energy_drop_at: Optional[float] = None):
        self.energy_drop_at = energy_drop_at
        self.rng = random.Random(seed)
        self.phases = phases
        self.clock = clock
        self.started = self.last = clock()
        rng = self.rng
        self.base_current = [rng.uniform(0.5, 4.0) for _ in range(phases)]
        self.swing = [rng.uniform(0.5, 3.0) for _ in range(phases)]
        self.period = [rng.uniform(20.0, 90.0) for _ in range(phases)]
        self.offset = [rng.uniform(0, 2 * math.pi) for _ in range(phases)]
        # L3 of a three-phase meter feeds in; single-phase meters only draw.
        self.direction = [-1.0 if phases == 3 and n == 2 else 1.0 for n in range(phases)]
        self.kwh_import = [rng.uniform(100.0, 5000.0) for _ in range(phases)]
        self.kwh_export = [rng.uniform(0.0, 800.0) if phases == 3 else 0.0 for _ in range(phases)]
        self.kvarh_import = [rng.uniform(10.0, 400.0) for _ in range(phases)]
        self.kvarh_export = [rng.uniform(0.0, 40.0) for _ in range(phases)]
        self.values: Dict[str, float] = {}
        self._compute(self.started)

    def sample(self) -> Dict[str, float]:
        """Advance to now and return every measurement (names of the catalogue)."""
        now = self.clock()
        if now > self.last:
            self._integrate(now - self.last)
            self._maybe_drop(now)
            self.last = now
            self._compute(now)
        return self.values

    def _maybe_drop(self, now: float) -> None:
        if self.energy_drop_at is not None and now - self.started >= self.energy_drop_at:
            self.energy_drop_at = None
            for counters in (self.kwh_import, self.kwh_export, self.kvarh_import, self.kvarh_export):
                counters[:] = [value / 2 for value in counters]

    def _integrate(self, seconds: float) -> None:
        hours = seconds / 3600.0
        for n in range(self.phases):
            power = self.values[f"WLocPhs{PHASE_LETTERS[n]}"]
            reactive = self.values[f"VArLocPhs{PHASE_LETTERS[n]}"]
            if power >= 0:
                self.kwh_import[n] += power * hours / 1000.0
                self.kvarh_import[n] += reactive * hours / 1000.0
            else:
                self.kwh_export[n] += -power * hours / 1000.0
                self.kvarh_export[n] += reactive * hours / 1000.0

    def _compute(self, now: float) -> None:
        t = now - self.started
        rng = self.rng
        v: Dict[str, float] = {}
        for n in range(self.phases):
            p = PHASE_LETTERS[n]
            volts = 230.0 + 3.0 * math.sin(t / 37.0 + n) + rng.uniform(-0.4, 0.4)
            wave = (1 + math.sin(2 * math.pi * t / self.period[n] + self.offset[n])) / 2
            amps = max(0.05, self.base_current[n] + self.swing[n] * wave + rng.uniform(-0.05, 0.05))
            pf = self.direction[n] * (0.93 + 0.05 * math.sin(t / 23.0 + n))
            apparent = volts * amps
            power = apparent * pf
            reactive = math.sqrt(max(apparent * apparent - power * power, 0.0))
            v[f"VolLocPhs{p}"] = volts
            v[f"AmpLocPhs{p}"] = amps
            v[f"WLocPhs{p}"] = power
            v[f"VALocPhs{p}"] = apparent
            v[f"VArLocPhs{p}"] = reactive
            v[f"AngLocPhs{p}"] = pf
            v[f"PhAngPhs{p}"] = math.degrees(math.acos(max(-1.0, min(1.0, pf))))
            v[f"ThdVolPhs{p}"] = 2.0 + 0.8 * math.sin(t / 51.0 + n) + rng.uniform(-0.1, 0.1)
            v[f"TotkWhImportPhs{p}"] = self.kwh_import[n]
            v[f"TotkWhExportPhs{p}"] = self.kwh_export[n]
            v[f"TotkWhPhs{p}"] = self.kwh_import[n] + self.kwh_export[n]
            v[f"TotkVArhImportPhs{p}"] = self.kvarh_import[n]
            v[f"TotkVArhExportPhs{p}"] = self.kvarh_export[n]
            v[f"TotkVArhPhs{p}"] = self.kvarh_import[n] + self.kvarh_export[n]
        phase_names = PHASE_LETTERS[: self.phases]
        total = sum(v[f"WLocPhs{p}"] for p in phase_names)
        total_apparent = sum(v[f"VALocPhs{p}"] for p in phase_names)
        v["TotW"] = total
        v["TotVA"] = total_apparent
        v["TotVAr"] = sum(v[f"VArLocPhs{p}"] for p in phase_names)
        v["TotPF"] = total / total_apparent if total_apparent else 1.0
        v["TotPhAng"] = math.degrees(math.acos(max(-1.0, min(1.0, v["TotPF"]))))
        v["TotWImport"] = sum(max(v[f"WLocPhs{p}"], 0.0) for p in phase_names)
        v["TotWExport"] = sum(max(-v[f"WLocPhs{p}"], 0.0) for p in phase_names)
        v["Freq"] = 50.0 + 0.04 * math.sin(t / 13.0) + rng.uniform(-0.01, 0.01)
        v["ThdVol"] = sum(v[f"ThdVolPhs{p}"] for p in phase_names) / self.phases
        v["TotkWhImport"] = sum(self.kwh_import)
        v["TotkWhExport"] = sum(self.kwh_export)
        v["TotkWh"] = v["TotkWhImport"] + v["TotkWhExport"]
        v["TotkVArhImport"] = sum(self.kvarh_import)
        v["TotkVArhExport"] = sum(self.kvarh_export)
        v["TotkVArh"] = v["TotkVArhImport"] + v["TotkVArhExport"]
        self.values = v
