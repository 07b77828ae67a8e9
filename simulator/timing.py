"""Meters that are difficult about timing, per virtual meter (``--turnaround``, ``--min-pause``, ``--sulk``).

Real meters differ in how soon they answer and how much quiet they need
after an answer before they take the next request; the gateway learns both
(sdm.timing), and these options give it something to learn from:

* ``--turnaround ID=MS``, ``ID=LO-HI`` (uniform) or ``ID=LO-HI+LONG@P`` (and,
  with probability P, LONG ms instead): the meter's delay before it answers;
* ``--min-pause ID=MS`` (a request sooner after the meter's last answer is
  ignored) or ``ID=MS:garble`` (answered with a garbled CRC instead);
* ``--sulk ID=MS:S``: a request sooner than MS after the last answer makes
  the meter stop answering for S seconds, as some Eastron models are said to.

Times are measured from the end of the meter's last answer to the moment the
request is read from the line.  They need ``--baud`` (simulator/pacing.py):
without a line model a pty answers at once and no delay means anything.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Tuple

ANSWER, IGNORE, GARBLE = "answer", "ignore", "garble"

_TURNAROUND = re.compile(r"^(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?(?:\+(\d+(?:\.\d+)?)@(0?\.\d+|1|0))?$")


@dataclass(frozen=True)
class Turnaround:
    """A turnaround distribution in seconds: uniform in [low, high], ``long`` with probability ``chance``."""

    low: float
    high: float
    long: float = 0.0
    chance: float = 0.0

    def draw(self, rng: random.Random) -> float:
        if self.chance and rng.random() < self.chance:
            return self.long
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class MinPause:
    seconds: float
    garble: bool = False      # answer garbled instead of ignoring


@dataclass(frozen=True)
class Sulk:
    pause: float              # a request sooner than this after the last answer ...
    seconds: float            # ... silences the meter this long


def _split(option: str, text: str) -> Tuple[int, str]:
    slave, sep, spec = text.partition("=")
    if not sep or not slave.strip().isdigit() or not 1 <= int(slave) <= 247:
        raise ValueError(f"{option} {text!r}: expected ID=... with ID 1-247")
    return int(slave), spec.strip()


def parse_turnaround(text: str) -> Tuple[int, Turnaround]:
    """``1=20``, ``1=20-120`` or ``1=20-40+400@0.01`` -> (1, Turnaround in seconds)."""
    slave, spec = _split("--turnaround", text)
    match = _TURNAROUND.match(spec)
    if not match:
        raise ValueError(f"--turnaround {text!r}: expected ID=MS, ID=LO-HI or ID=LO-HI+LONG@P (e.g. 1=20-40+400@0.01)")
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) else low
    if high < low:
        raise ValueError(f"--turnaround {text!r}: {high} is below {low}")
    long = float(match.group(3)) if match.group(3) else 0.0
    chance = float(match.group(4)) if match.group(4) else 0.0
    return slave, Turnaround(low / 1000, high / 1000, long / 1000, chance)


def parse_min_pause(text: str) -> Tuple[int, MinPause]:
    """``1=60`` or ``1=60:garble`` -> (1, MinPause)."""
    slave, spec = _split("--min-pause", text)
    ms, _, how = spec.partition(":")
    if how not in ("", "garble") or not _is_ms(ms):
        raise ValueError(f"--min-pause {text!r}: expected ID=MS or ID=MS:garble")
    return slave, MinPause(float(ms) / 1000, how == "garble")


def parse_sulk(text: str) -> Tuple[int, Sulk]:
    """``1=60:3`` -> (1, Sulk(0.06, 3.0))."""
    slave, spec = _split("--sulk", text)
    ms, _, seconds = spec.partition(":")
    if not (_is_ms(ms) and _is_ms(seconds)):
        raise ValueError(f"--sulk {text!r}: expected ID=MS:SECONDS (e.g. 1=60:3)")
    return slave, Sulk(float(ms) / 1000, float(seconds))


def _is_ms(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


@dataclass
class Tempers:
    """Each meter's timing behaviour and what it remembers: its last answer, a sulk under way."""

    turnarounds: Dict[int, Turnaround] = field(default_factory=dict)
    min_pauses: Dict[int, MinPause] = field(default_factory=dict)
    sulks: Dict[int, Sulk] = field(default_factory=dict)
    seed: Optional[int] = None
    last_answer: Dict[int, float] = field(default_factory=dict)
    sulking_until: Dict[int, float] = field(default_factory=dict)
    counts: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(None if self.seed is None else f"tempers:{self.seed}")

    @property
    def slaves(self) -> Iterable[int]:
        return set(self.turnarounds) | set(self.min_pauses) | set(self.sulks)

    def verdict(self, slave: int, now: float) -> Tuple[str, Optional[float]]:
        """What the meter does with a request read at ``now``, and its turnaround (None: the line's)."""
        action = self._action(slave, now)
        self.counts[action] = self.counts.get(action, 0) + 1
        shape = self.turnarounds.get(slave)
        return action, None if shape is None else shape.draw(self.rng)

    def _action(self, slave: int, now: float) -> str:
        if now < self.sulking_until.get(slave, 0.0):
            return IGNORE
        since = now - self.last_answer.get(slave, float("-inf"))
        sulk = self.sulks.get(slave)
        if sulk is not None and since < sulk.pause:
            self.sulking_until[slave] = now + sulk.seconds
            return IGNORE
        pause = self.min_pauses.get(slave)
        if pause is not None and since < pause.seconds:
            return GARBLE if pause.garble else IGNORE
        return ANSWER

    def answered(self, slave: int, now: float) -> None:
        """The meter's answer ended at ``now``."""
        self.last_answer[slave] = now


def garbled(reply: bytes) -> bytes:
    """The reply with its last byte (half the CRC) flipped: a meter that answered before it was ready."""
    return reply[:-1] + bytes([reply[-1] ^ 0xFF])
