"""The register cache: the raw registers of every good reply, for serving the meters as MODBUS devices.

A bus thread stores the whole block of each good reply (every register it
asked for, also those no measurement uses) with the monotonic time it was
read; the Modbus servers (sdm/serve.py) answer from it in threads of their
own.  Neither side takes a lock: a block is an immutable tuple, and storing
it is one dict assignment, which the GIL makes atomic; a reader copies a
meter's blocks with one ``tuple(dict.values())``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

MeterKey = Tuple[str, int]          # (bus name, MODBUS id)


@dataclass(frozen=True)
class CachedBlock:
    fc: int
    start: int
    words: Tuple[int, ...]
    at: float                        # monotonic time the reply was read

    @property
    def end(self) -> int:
        return self.start + len(self.words)


@dataclass(frozen=True)
class CachedRead:
    """The registers a request asked for, and when the oldest of them was read."""

    words: Tuple[int, ...]
    read_at: float


Watcher = Callable[[str, int, CachedBlock], None]    # (bus, id, block), called in the storing thread


class RegisterCache:
    """Blocks of registers per (bus, id), newest reply per (fc, start, count)."""

    def __init__(self) -> None:
        self._meters: Dict[MeterKey, Dict[Tuple[int, int, int], CachedBlock]] = {}
        self._watchers: Tuple[Watcher, ...] = ()      # replaced whole, never changed: no lock

    def store(self, bus: str, device_id: int, fc: int, start: int, words: Sequence[int], at: float) -> None:
        """Called by the bus thread after every good read reply."""
        blocks = self._meters.get((bus, device_id))
        if blocks is None:
            blocks = self._meters.setdefault((bus, device_id), {})
        block = blocks[(fc, start, len(words))] = CachedBlock(fc, start, tuple(words), at)
        for watcher in self._watchers:
            watcher(bus, device_id, block)

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher`` with every block stored from now on (sdm/serve_process.py feeds its
        helper with it); it runs in the bus thread, so it must never block."""
        self._watchers = self._watchers + (watcher,)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers = tuple(w for w in self._watchers if w != watcher)

    def blocks(self) -> Iterator[Tuple[MeterKey, CachedBlock]]:
        """Every cached block with its meter, for a helper starting with what is already known."""
        for key, blocks in tuple(self._meters.items()):
            for block in tuple(blocks.values()):
                yield key, block

    def read(self, bus: str, device_id: int, fc: int, start: int, count: int) -> Optional[CachedRead]:
        """Registers [start, start + count) of function code ``fc``, each from the newest block that
        holds it; None when any of them was never read."""
        blocks = self._meters.get((bus, device_id))
        if not blocks:
            return None
        words: list = [None] * count
        missing = count
        oldest = float("inf")
        end = start + count
        for block in sorted(tuple(blocks.values()), key=lambda b: -b.at):
            if block.fc != fc or block.end <= start or block.start >= end:
                continue
            used = False
            for address in range(max(start, block.start), min(end, block.end)):
                if words[address - start] is None:
                    words[address - start] = block.words[address - block.start]
                    missing -= 1
                    used = True
            if used:
                oldest = min(oldest, block.at)
            if not missing:
                return CachedRead(tuple(words), oldest)
        return None

    def newest(self, bus: str, device_id: int) -> Optional[float]:
        """When the meter's newest cached block was read (None: never)."""
        blocks = tuple(self._meters.get((bus, device_id), {}).values())
        return max((block.at for block in blocks), default=None)
