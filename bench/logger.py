"""Logger file: bytes per stored value, and export time and memory for 100,000 and 1,000,000 values.

The file is filled through sdm.store.Writer in batches of 10,000 (as the
recorder stores), with the values a three-meter bus gives: an SDM630, a
Janitza and an SDM120 read in blocks, values of the simulator's physics
through the meters' float32 registers.  Bytes per value = file size after
the writer closed (WAL checkpointed) / values, indexes included (the table
is its own index).  Export runs ``sdm630_logger export`` as a process; its
peak RSS for ten times the values shows whether memory stays flat.
Run: ``python -m bench.logger``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List

from sdm.encoding import decode, encode
from sdm.meters.registry import lookup
from sdm.store import Sample, Writer
from simulator.physics import Physics
from tests.support import ROOT, python_cmd

BUS = {1: "sdm630", 26: "janitza", 2: "sdm120"}
BLOCK = 17              # values per read (one request's worth)
READ_MS = 30            # ms between two reads on the bus
BATCH = 10_000
SIZES = (100_000, 1_000_000)
TARGET_BYTES = 25.0


def bus_samples(count: int, start_ms: int = 1_700_000_000_000) -> Iterator[Sample]:
    """``count`` samples as the firehose delivers them: meters in turn, a block of values per read."""
    meters = [(device, lookup(key), Physics(lookup(key).phases, seed=device)) for device, key in BUS.items()]
    made, now, turn = 0, start_ms, 0
    while True:
        device, model, physics = meters[turn % len(meters)]
        values = physics.sample()
        regs = model.registers
        first = (turn // len(meters) * BLOCK) % len(regs)
        for reg in (regs * 2)[first:first + min(BLOCK, len(regs))]:
            yield Sample(device, reg.name, now, decode(encode(values[reg.name], reg.encoding), reg.encoding))
            made += 1
            if made == count:
                return
        now += READ_MS
        turn += 1


def fill(path: Path, count: int) -> float:
    """Store ``count`` values; seconds it took."""
    writer = Writer(str(path))
    started = time.monotonic()
    batch: List[Sample] = []
    for sample in bus_samples(count):
        batch.append(sample)
        if len(batch) == BATCH:
            writer.write(batch)
            batch = []
    writer.write(batch)
    writer.close()
    return time.monotonic() - started


def export(path: Path) -> Dict[str, float]:
    """Export to a file in a child process: seconds, peak RSS, rows."""
    out = path.with_suffix(".tsv")
    started = time.monotonic()
    proc = subprocess.Popen(python_cmd("sdm.cli.logger", "export", "-f", str(path), "-t", str(out)), cwd=ROOT,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError(f"export of {path} failed with {proc.returncode}")
    with open(out, "rb") as tsv:
        rows = sum(1 for _ in tsv) - 1
    return {"export_s": round(seconds, 2), "export_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "tsv_rows": rows, "tsv_mb": round(out.stat().st_size / 1e6, 1)}


def run() -> Dict[str, object]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="sdm-bench-logger-") as tmp:
        for count in SIZES:
            path = Path(tmp) / f"log{count}.db"
            seconds = fill(path, count)
            size = path.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob(f"{path.name}-*"))
            rows.append({"values": count, "file_mb": round(size / 1e6, 2),
                         "bytes_per_value": round(size / count, 2),
                         "store_values_per_s": round(count / seconds), **export(path)})
    largest = rows[-1]
    return {"logger": {
        "rows": rows,
        "target": f"under {TARGET_BYTES:g} bytes per value, indexes included",
        "holds": all(r["bytes_per_value"] < TARGET_BYTES for r in rows),
        "export_memory_growth_x": round(largest["export_peak_rss_mb"] / rows[0]["export_peak_rss_mb"], 2),
    }}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
