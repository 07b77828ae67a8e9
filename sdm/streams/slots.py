"""Per-address caps of the long-lived streams (/ws, /firehose).

A stream connection is cheap for a client and holds a slot of ours for
minutes; without a cap per address one client could take every slot of the
global cap and lock everyone else out.
"""

from __future__ import annotations

from typing import Dict


class PerAddress:
    """How many slots each client address holds, at most ``limit`` each."""

    def __init__(self, limit: int):
        self.limit = limit
        self._held: Dict[str, int] = {}

    def take(self, address: str) -> bool:
        """One more slot for ``address``; False (nothing taken) when it holds its limit."""
        held = self._held.get(address, 0)
        if held >= self.limit:
            return False
        self._held[address] = held + 1
        return True

    def give_back(self, address: str) -> None:
        held = self._held.get(address, 0) - 1
        if held > 0:
            self._held[address] = held
        else:
            self._held.pop(address, None)    # addresses without a slot cost no memory

    def held(self, address: str) -> int:
        return self._held.get(address, 0)
