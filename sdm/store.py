"""The logger's file: SQLite (WAL), one compact row per stored value.

A row is ``(key, value)`` where the key packs the read time in ms, the device
id and a small integer for the measurement name::

    key = time_ms << 16 | device << 8 | measurement_id

The key is the table's INTEGER PRIMARY KEY, so the row is the index: rows sit
in (time, device, measurement) order, a time range is a key range, the same
value stored twice is the same key (stored once), and appending keeps pages
full (about 23 bytes per value in all, see ``make bench``).  The view
``sample(time, device, measurement, value)`` shows the rows unpacked for
anyone reading the file with SQL.  The table ``series`` keeps per device and
measurement the count and the first and last time, so inspecting a big file
costs nothing.  One writer at a time: it holds an exclusive flock on the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import quote

from .measurements import CATALOGUE

log = logging.getLogger(__name__)

APPLICATION_ID = 0x53444D4C      # "SDML" in the file header: this is a logger file
SCHEMA_VERSION = 1
MAX_DEVICE = 0xFF
MAX_MEASUREMENTS = 0xFF

SCHEMA = """
CREATE TABLE measurement (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE packed_sample (key INTEGER PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE series (
    device INTEGER NOT NULL, measurement INTEGER NOT NULL,
    count INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
    PRIMARY KEY (device, measurement)) WITHOUT ROWID;
CREATE VIEW sample AS
    SELECT key >> 16 AS time, (key >> 8) & 255 AS device, m.name AS measurement, value
    FROM packed_sample JOIN measurement AS m ON m.id = key & 255;
"""


class StoreError(Exception):
    """The file cannot be used; the message says why, for a person."""


class Sample(NamedTuple):
    device: int
    name: str
    time: int       # ms since the epoch (read time)
    value: float


def pack(time_ms: int, device: int, measurement: int) -> int:
    return time_ms << 16 | device << 8 | measurement


def unpack(key: int) -> Tuple[int, int, int]:
    """key -> (time_ms, device, measurement id)."""
    return key >> 16, (key >> 8) & 0xFF, key & 0xFF


@dataclass(frozen=True)
class DeviceSummary:
    device: int
    count: int
    first: int
    last: int
    names: Tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    count: int
    first: Optional[int]
    last: Optional[int]
    devices: Tuple[DeviceSummary, ...]


def column_order(names: Iterable[str]) -> List[str]:
    """Catalogue order (L1, L2, L3 of a quantity side by side), unknown names last."""
    known = {name: index for index, name in enumerate(CATALOGUE)}
    return sorted(set(names), key=lambda name: (known.get(name, len(known)), name))


def _sqlite_error(path: str, err: sqlite3.Error) -> StoreError:
    if isinstance(err, sqlite3.DatabaseError) and "not a database" in str(err):
        return StoreError(f"{path} is not an SQLite database")
    return StoreError(f"{path}: {err}")


class _File:
    """What the writer and the reader share: the connection and the measurement ids."""

    def __init__(self, path: str, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn
        self.ids: Dict[str, int] = {}
        self.names: Dict[int, str] = {}

    def _load_names(self) -> None:
        self.ids.clear()
        self.names.clear()
        for mid, name in self.conn.execute("SELECT id, name FROM measurement"):
            self.ids[name], self.names[mid] = mid, name

    def name(self, mid: int) -> str:
        """A measurement id's name; reloaded when a writer added names since."""
        if mid not in self.names:
            self._load_names()
        return self.names[mid]

    def _is_ours(self) -> bool:
        return self.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID

    def _has_tables(self) -> bool:
        return self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0

    def last_time(self) -> Optional[int]:
        row = self.conn.execute("SELECT max(key) FROM packed_sample").fetchone()
        return None if row[0] is None else unpack(row[0])[0]

    def close(self) -> None:
        self.conn.close()


class Writer(_File):
    """Opens (or creates) a logger file for recording; refuses a file another writer holds."""

    def __init__(self, path: str):
        self._lock_fd: Optional[int] = _lock(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None)
            super().__init__(path, conn)
            self._prepare()
        except sqlite3.Error as err:
            self._release()
            raise _sqlite_error(path, err) from None
        except StoreError:
            self._release()
            raise

    def _prepare(self) -> None:
        if self._has_tables() and not self._is_ours():
            raise StoreError(f"{self.path} is an SQLite database of another program; not touching it")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")   # WAL: a crash loses at most the last commit
        if not self._has_tables():
            self.conn.executescript(f"BEGIN IMMEDIATE;{SCHEMA}PRAGMA application_id={APPLICATION_ID};"
                                    f"PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
        self._load_names()

    def write(self, samples: Sequence[Sample]) -> int:
        """Store samples in one transaction; the number that were new (repeats are stored once)."""
        rows: Dict[int, float] = {}
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for sample in samples:
                mid = self._measurement_id(sample.name)
                if mid is not None:
                    rows[pack(sample.time, sample.device, mid)] = sample.value
            if rows:
                for key, in self.conn.execute("SELECT key FROM packed_sample WHERE key BETWEEN ? AND ?",
                                              (min(rows), max(rows))):
                    rows.pop(key, None)
                self.conn.executemany("INSERT INTO packed_sample VALUES (?, ?)", sorted(rows.items()))
                self._count(rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return len(rows)

    def _rollback(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
            self._load_names()
        except sqlite3.Error:
            pass   # the connection is gone; the caller's error says why

    def _measurement_id(self, name: str) -> Optional[int]:
        """The name's small integer; None (and the value not stored) once all 255 are taken."""
        mid = self.ids.get(name)
        if mid is None:
            if len(self.ids) >= MAX_MEASUREMENTS:
                log.warning("%s: no room for measurement %s (%d names already); not stored",
                            self.path, name, MAX_MEASUREMENTS)
                return None
            mid = self.conn.execute("INSERT INTO measurement (name) VALUES (?)", (name,)).lastrowid
            assert mid is not None, "sqlite gives every inserted row an id"
            self.ids[name], self.names[mid] = mid, name
        return mid

    def _count(self, rows: Dict[int, float]) -> None:
        series: Dict[Tuple[int, int], List[int]] = {}
        for key in rows:
            time_ms, device, mid = unpack(key)
            entry = series.setdefault((device, mid), [0, time_ms, time_ms])
            entry[0] += 1
            entry[1] = min(entry[1], time_ms)
            entry[2] = max(entry[2], time_ms)
        self.conn.executemany(
            "INSERT INTO series VALUES (?, ?, ?, ?, ?) ON CONFLICT (device, measurement) DO UPDATE SET "
            "count = count + excluded.count, first = min(first, excluded.first), last = max(last, excluded.last)",
            [(device, mid, *entry) for (device, mid), entry in series.items()])

    def count(self) -> int:
        return self.conn.execute("SELECT coalesce(sum(count), 0) FROM series").fetchone()[0]

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _lock(path: str) -> int:
    """An exclusive flock on the file itself (created if missing), held while recording."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a file") from None
    except OSError as err:
        raise StoreError(f"cannot open {path} for writing: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"{path} is in use by another recorder") from None
    return fd


class Reader(_File):
    """Opens an existing logger file read-only; works while a recorder writes to it (WAL)."""

    def __init__(self, path: str):
        if not Path(path).exists():
            raise StoreError(f"{path} does not exist")
        if not Path(path).is_file():
            raise StoreError(f"{path} is not a file")
        try:
            conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
            super().__init__(path, conn)
            if not self._is_ours():
                raise StoreError(f"{path} is empty" if not self._has_tables() else
                                 f"{path} is not an sdm630_logger file")
            self._load_names()
        except sqlite3.Error as err:
            raise _sqlite_error(path, err) from None

    def summary(self) -> Summary:
        devices = []
        rows = self.conn.execute("SELECT device, measurement, count, first, last FROM series "
                                 "ORDER BY device, measurement").fetchall()
        for device in sorted({row[0] for row in rows}):
            mine = [row for row in rows if row[0] == device]
            devices.append(DeviceSummary(
                device, sum(r[2] for r in mine), min(r[3] for r in mine), max(r[4] for r in mine),
                tuple(column_order(self.name(r[1]) for r in mine))))
        return Summary(sum(d.count for d in devices),
                       min((d.first for d in devices), default=None),
                       max((d.last for d in devices), default=None), tuple(devices))

    def columns(self, devices: Optional[Sequence[int]], start: Optional[int], end: Optional[int]) -> List[str]:
        """Measurement names recorded for these devices within [start, end)."""
        names = []
        for device, mid, first, last in self.conn.execute("SELECT device, measurement, first, last FROM series"):
            wanted = devices is None or device in devices
            if wanted and (start is None or last >= start) and (end is None or first < end):
                names.append(self.name(mid))
        return column_order(names)

    def rows(self, devices: Optional[Sequence[int]], start: Optional[int],
             end: Optional[int]) -> Iterator[Tuple[int, int, Dict[str, float]]]:
        """(time, device, {name: value}) per device and read time, in time order; streams."""
        low = pack(start, 0, 0) if start is not None else -(1 << 63)
        high = pack(end, 0, 0) - 1 if end is not None else (1 << 63) - 1
        current: Optional[int] = None
        values: Dict[str, float] = {}
        try:
            for key, value in self.conn.execute(
                    "SELECT key, value FROM packed_sample WHERE key BETWEEN ? AND ? ORDER BY key", (low, high)):
                group = key >> 8
                if group != current:
                    if current is not None and values:
                        yield current >> 8, current & 0xFF, values
                    current, values = group, {}
                if devices is None or (group & 0xFF) in devices:
                    values[self.name(key & 0xFF)] = value
            if current is not None and values:
                yield current >> 8, current & 0xFF, values
        except sqlite3.Error as err:
            raise _sqlite_error(self.path, err) from None
