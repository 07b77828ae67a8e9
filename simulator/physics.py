"""Living, physically consistent values for a virtual meter.

Per phase: a voltage near 230 V, a current that drifts between a base load
and peaks, a power factor; P = U * I * PF, S = U * I, Q = sqrt(S^2 - P^2).
One phase of a three-phase meter feeds in (a PV inverter on L3), so export
counters move too.  Energy counters integrate power over the time between two
requests: import while P > 0, export while P < 0.  A seed makes it repeatable.

Counter glitches, each at a time after the start (:class:`EnergyGlitches`), test what the
gateway makes of a misbehaving meter: a drop (every counter falls to half and counts on from
there), a spike (every counter x1000 for one reading), a zero (0 for one reading), a NaN (the
float32 NaN, or what an integer register makes of it, for one reading), a reset
(every counter restarts from 0 and counts on) and a wrap: a counter kept in an unsigned
register with a divisor (DZG: uint32 / 1000) rolls over to 0 at 2**32 / divisor; with the wrap
option such counters start just so far below that limit that, at the power of the start, they
roll over that many seconds later (about then: the power drifts).
Float32 counters (Eastron, Janitza) never wrap; they only lose resolution as they grow.
"One reading" of a spike, zero or NaN means: each counter shows it once, to the first request that
reads it after the glitch time, whichever block of the meter's plan that is.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from sdm.sanity import COUNTERS

PHASE_LETTERS = "ABC"
SPIKE_FACTOR = 1000.0
IDLE_LEAD_KWH = 1.0     # how far below its limit the wrap option starts a counter that does not move


@dataclass(frozen=True)
class EnergyGlitches:
    """Seconds after the start at which the counters misbehave (None: never); see the module doc.

    ``wrap`` is the exception: it sets where wrapping counters start, so that they roll over
    about that many seconds after the start.
    """

    drop: Optional[float] = None
    spike: Optional[float] = None
    zero: Optional[float] = None
    nan: Optional[float] = None
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
        self._offsets: Dict[str, float] = {}     # added to a wrapping counter by the wrap option
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
        if glitches.wrap is not None:
            self._offsets = self._wrap_offsets(glitches.wrap)
            self._in_registers(self.values)    # the first values were computed without the offsets

    def sample(self) -> Dict[str, float]:
        """Advance to now and return every true measurement (names of the catalogue)."""
        now = self.clock()
        if now > self.last:
            self._integrate(now - self.last)
            self._glitch(now - self.started)
            self.last = now
            self._compute(now)
        return self.values

    def serve(self, names: Iterable[str]) -> Dict[str, float]:
        """What the meter answers when ``names`` are read: :meth:`sample`, with a pending
        one-reading glitch (spike, zero, NaN) shown on those names and then used up."""
        values = self.sample()
        wanted = self._one_shot.keys() & set(names)
        if not wanted:
            return values
        values = dict(values)
        for name in wanted:
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
            self._offsets = {}
        if self._due("spike", elapsed):
            self._one_shot = {name: SPIKE_FACTOR for name in COUNTERS & self.values.keys()}
        if self._due("zero", elapsed):
            self._one_shot = {name: 0.0 for name in COUNTERS & self.values.keys()}
        if self._due("nan", elapsed):
            self._one_shot = {name: math.nan for name in COUNTERS & self.values.keys()}

    def _counters(self) -> Tuple[List[float], List[float], List[float], List[float]]:
        """Per phase: kWh imported, exported, kvarh imported, exported."""
        return self.kwh_import, self.kwh_export, self.kvarh_import, self.kvarh_export

    def _scale_counters(self, factor: float) -> None:
        for counters in self._counters():
            counters[:] = [value * factor for value in counters]

    def _gains(self, seconds: float) -> Tuple[List[float], ...]:
        """What each per-phase counter gains in ``seconds`` at the present power (as _counters)."""
        hours = seconds / 3600.0
        gains = tuple([0.0] * self.phases for _ in range(4))
        for n in range(self.phases):
            power = self.values[f"WLocPhs{PHASE_LETTERS[n]}"]
            reactive = self.values[f"VArLocPhs{PHASE_LETTERS[n]}"]
            direction = 0 if power >= 0 else 1           # import or export
            gains[direction][n] = abs(power) * hours / 1000.0
            gains[2 + direction][n] = reactive * hours / 1000.0
        return gains

    def _integrate(self, seconds: float) -> None:
        for counters, gains in zip(self._counters(), self._gains(seconds)):
            counters[:] = [value + gain for value, gain in zip(counters, gains)]

    def _wrap_offsets(self, seconds: float) -> Dict[str, float]:
        """Offsets that put each wrapping counter ``seconds`` of its present rise below its limit."""
        rises = self._counter_values(*self._gains(seconds))
        offsets = {}
        for name, limit in self.counter_limits.items():
            lead = rises[name] if rises[name] > 0 else IDLE_LEAD_KWH
            offsets[name] = limit - lead - self.values[name]
        return offsets

    def _in_registers(self, values: Dict[str, float]) -> None:
        """Counters kept in a register that wraps roll over at its limit (after the wrap option's offset)."""
        for name, limit in self.counter_limits.items():
            values[name] = (values[name] + self._offsets.get(name, 0.0)) % limit

    def _counter_values(self, kwh_import: List[float], kwh_export: List[float], kvarh_import: List[float],
                        kvarh_export: List[float]) -> Dict[str, float]:
        """Every counter of the catalogue from the per-phase ones: phases, totals, sums."""
        v: Dict[str, float] = {}
        for n, p in enumerate(PHASE_LETTERS[: self.phases]):
            v[f"TotkWhImportPhs{p}"] = kwh_import[n]
            v[f"TotkWhExportPhs{p}"] = kwh_export[n]
            v[f"TotkWhPhs{p}"] = kwh_import[n] + kwh_export[n]
            v[f"TotkVArhImportPhs{p}"] = kvarh_import[n]
            v[f"TotkVArhExportPhs{p}"] = kvarh_export[n]
            v[f"TotkVArhPhs{p}"] = kvarh_import[n] + kvarh_export[n]
        v["TotkWhImport"] = sum(kwh_import)
        v["TotkWhExport"] = sum(kwh_export)
        v["TotkWh"] = v["TotkWhImport"] + v["TotkWhExport"]
        v["TotkVArhImport"] = sum(kvarh_import)
        v["TotkVArhExport"] = sum(kvarh_export)
        v["TotkVArh"] = v["TotkVArhImport"] + v["TotkVArhExport"]
        return v

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
        v.update(self._counter_values(*self._counters()))
        self._in_registers(v)
        self.values = v
