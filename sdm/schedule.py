"""How often each meter is read: a poll interval, and a slow set read less often.

By default every meter is read as fast as the bus allows, all of its values
every cycle.  A poll interval makes a meter wait between the starts of two
cycles (less traffic); a slow interval reads the slowly changing values
(energy counters, THD, frequency) only every so many seconds, so the cycles
in between carry only the fast set (power, voltage, current, power factor)
and come round more often.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from .meters.registry import parse_slave_id

DEFAULT_SLOW_INTERVAL = 10.0
SLOW_PREFIXES = ("Totk", "Thd", "Freq")   # energy counters, THD, frequency


def is_slow(name: str) -> bool:
    """True for a measurement of the slow set."""
    return name.startswith(SLOW_PREFIXES)


@dataclass(frozen=True)
class Schedule:
    interval: float = 0.0        # seconds between the starts of two cycles; 0: back to back
    slow_interval: float = 0.0   # the slow set every so many seconds; 0: every cycle


def next_due(due: float, started: float, interval: float) -> float:
    """When the next round is due, given when this one was due and when it started.

    Rounds stay on a fixed grid (every ``interval`` from the first), so small
    delays do not add up; a round that started a whole interval late moves
    the grid to its own start instead of causing a burst of catch-up rounds.
    """
    base = due if started - due < interval else started
    return base + interval


def parse_seconds(items: Iterable[str], flag: str, unit: str = "seconds") -> Tuple[Optional[float], Dict[int, float]]:
    """``SECONDS`` (every meter) or ``ID=SECONDS`` items -> (for all, {id: seconds}); ``unit`` names
    what the numbers are in messages (the same form serves amperes)."""
    everyone: Optional[float] = None
    per_meter: Dict[int, float] = {}
    for item in items:
        id_text, sep, seconds_text = item.rpartition("=")
        try:
            seconds = float(seconds_text)
        except ValueError:
            raise ValueError(f"{flag} {item!r}: {seconds_text!r} is not a number of {unit}") from None
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"{flag} {item!r}: {unit} must be 0 or more")
        if sep:
            try:
                per_meter[parse_slave_id(id_text)] = seconds
            except ValueError as err:
                raise ValueError(f"{flag} {item!r}: {err}") from None
        else:
            everyone = seconds
    return everyone, per_meter


def schedules(device_ids: List[int], intervals: Iterable[str] = (),
              slow: Iterable[str] = ()) -> Dict[int, Schedule]:
    """Each configured meter's schedule from the --interval and --slow items."""
    all_interval, interval_of = parse_seconds(intervals, "--interval")
    all_slow, slow_of = parse_seconds(slow, "--slow")
    unknown = sorted((set(interval_of) | set(slow_of)) - set(device_ids))
    if unknown:
        raise ValueError(f"--interval/--slow name meter id {unknown[0]}, which is not configured")
    return {
        device_id: Schedule(interval_of.get(device_id, all_interval or 0.0),
                            slow_of.get(device_id, all_slow or 0.0))
        for device_id in device_ids
    }
