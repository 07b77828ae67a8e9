"""MQTT topic names of the gateway: one place, shared by the publisher and HA discovery."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[#+/\s\x00]+")


def topic_safe(text: str) -> str:
    """A topic level from free text: no wildcards, separators, spaces or NUL (each run becomes ``_``)."""
    safe = _UNSAFE.sub("_", text)
    return safe or "_"


@dataclass(frozen=True)
class Topics:
    """Topics under one base: ``<base>/status`` and ``<base>/<meter>/...``."""

    base: str

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def state(self, unique_id: str) -> str:
        return f"{self.base}/{topic_safe(unique_id)}/state"

    def availability(self, unique_id: str) -> str:
        return f"{self.base}/{topic_safe(unique_id)}/availability"

    def value(self, unique_id: str, name: str) -> str:
        return f"{self.base}/{topic_safe(unique_id)}/{name}"


def check_base(base: str) -> str:
    """A base topic users may give: non-empty, no wildcards, no empty levels at the ends."""
    if not base or any(c in base for c in "#+\x00"):
        raise ValueError(f"MQTT topic {base!r} must be non-empty and free of '#', '+' and NUL")
    if base.startswith("/") or base.endswith("/"):
        raise ValueError(f"MQTT topic {base!r} must not start or end with '/'")
    return base
