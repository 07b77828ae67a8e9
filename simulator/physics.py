"""Living, physically consistent values for a virtual meter.

Per phase: a voltage near 230 V, a current that drifts between a base load
and peaks, a power factor; P = U * I * PF, S = U * I, Q = sqrt(S^2 - P^2).
One phase of a three-phase meter feeds in (a PV inverter on L3), so export
counters move too.  Energy counters integrate power over the time between two
requests: import while P > 0, export while P < 0.  A seed makes it repeatable.

Counter glitches, each at a time after the start (:class:`EnergyGlitches`), test what the
gateway makes of a misbehaving meter: a drop (every counter falls to half and counts on from
there), a spike (every counter x1000 for one reading), a zero (0 for one reading), a reset
(every counter restarts from 0 and counts on) and a wrap: a counter kept in an unsigned
register with a divisor (DZG: uint32 / 1000) rolls over to 0 at 2**32 / divisor, and the wrap
glitch puts such counters just below that limit so that they roll over within seconds.
Float32 counters (Eastron, Janitza) never wrap; they only lose resolution as they grow.
"One reading" of a spike or zero means: each counter shows it once, to the first request that
reads it after the glitch time, whichever block of the meter's plan that is.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, Mapping, Optional

from sdm.sanity import COUNTERS

PHASE_LETTERS = "ABC"
SPIKE_FACTOR = 1000.0
WRAP_LEAD_KWH = 0.002   # how far below its register limit the wrap glitch puts a counter


@dataclass(frozen=True)
class EnergyGlitches:
    """Seconds after the start at which the counters misbehave (None: never); see the module doc."""

    drop: Optional[float] = None
    spike: Optional[float] = None
    zero: Optional[float] = None
    reset: Optional[float] = None
    wrap: Optional[float] = None


NO_GLITCHES = EnergyGlitches()


class Physics:
    def __init__(self, phases: int = 3, seed: Optional[int] = None, clock: Callable[[], float] = time.monotonic,
                 energy_drop_at: Optional[float] = None, glitches: EnergyGlitches = NO_GLITCHES,
                 counter_limits: Optional[Mapping[str, float]] = None):
        if energy_drop_at is not None:
            glitches = replace(glitches, drop=energy_drop_at)
        self.glitches = glitches
        self.counter_limits: Dict[str, float] = dict(counter_limits or {})   # name -> value it wraps at
        self._offsets: Dict[str, float] = {}     # added to a wrapping counter by the wrap glitch
        self._arm_wrap = False
        self._one_shot: Dict[str, float] = {}    # counter -> factor for its next read (spike, zero)
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

    def sample(self, names: Optional[Iterable[str]] = None) -> Dict[str, float]:
        """Advance to now and return every measurement (names of the catalogue).

        ``names`` are the measurements the caller is about to serve (all when None): a pending
        one-reading glitch (spike, zero) shows on those and is then used up.
        """
        now = self.clock()
        if now > self.last:
            self._integrate(now - self.last)
            self._glitch(now - self.started)
            self.last = now
            self._compute(now)
        return self._with_one_shot(names)

    def _with_one_shot(self, names: Optional[Iterable[str]]) -> Dict[str, float]:
        wanted = self._one_shot.keys() if names is None else self._one_shot.keys() & set(names)
        if not wanted:
            return self.values
        values = dict(self.values)
        for name in list(wanted):
            values[name] *= self._one_shot.pop(name)
        return values

    def _due(self, kind: str, elapsed: float) -> bool:
        """True once, at the first sample at or after the glitch's time."""
        at = getattr(self.glitches, kind)
        if at is None or elapsed < at:
            return False
        self.glitches = replace(self.glitches, **{kind: None})
        return True

    def _glitch(self, elapsed: float) -> None:
        if self._due("drop", elapsed):
            self._scale_counters(0.5)
        if self._due("reset", elapsed):
            self._scale_counters(0.0)
            self._offsets.clear()
        if self._due("spike", elapsed):
            self._one_shot = {name: SPIKE_FACTOR for name in COUNTERS & self.values.keys()}
        if self._due("zero", elapsed):
            self._one_shot = {name: 0.0 for name in COUNTERS & self.values.keys()}
        if self._due("wrap", elapsed):
            self._arm_wrap = True

    def _scale_counters(self, factor: float) -> None:
        for counters in (self.kwh_import, self.kwh_export, self.kvarh_import, self.kvarh_export):
            counters[:] = [value * factor for value in counters]

    def _in_registers(self, values: Dict[str, float]) -> None:
        """Counters kept in a register that wraps roll over at its limit (after the wrap glitch's offset)."""
        if self._arm_wrap:
            self._arm_wrap = False
            self._offsets = {name: limit - WRAP_LEAD_KWH - values[name] for name, limit in self.counter_limits.items()}
        for name, limit in self.counter_limits.items():
            values[name] = (values[name] + self._offsets.get(name, 0.0)) % limit

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
        self._in_registers(v)
        self.values = v
