"""make bench: measure every figure in one run, print them as tables, write them as JSON.

Sections are the modules of this folder that define ``run() -> dict``: ours
first (reading, bus, http_load), then any other in name order, so a new
figure plugs in by adding a module.  A section's dict holds figures (name ->
value), tables (name -> list of row dicts), both possibly nested in dicts,
and optionally "targets": rows of {"target", "figure", "holds"} (a nested dict
with "target" and "holds" counts as one too), gathered into one table at the end.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Tuple  # noqa: E402

HERE = Path(__file__).resolve().parent
FIRST = ["reading", "bus", "http_load"]


def section_names() -> List[str]:
    """Modules of bench/ with a top-level run(), ours first (found by reading, not importing, them)."""
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem in ("run", "__init__"):
            continue
        if re.search(r"^def run\(", path.read_text(encoding="utf-8"), re.M):
            names.append(path.stem)
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def machine() -> str:
    return (f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(rows: List[Dict[str, Any]]) -> List[str]:
    """Markdown table of row dicts (columns in first-seen order)."""
    columns: List[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def flat(figures: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested figures as one level: {"a": {"b": 1}} -> {"a.b": 1}; tables are left out."""
    found: Dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            found.update(flat(value, f"{prefix}{key}."))
        elif not is_table(value):
            found[f"{prefix}{key}"] = value
    return found


def tables(figures: Dict[str, Any], prefix: str = "") -> List[Tuple[str, List[Dict[str, Any]]]]:
    """Every table among the figures, nested ones too, with its dotted name."""
    found = []
    for key, value in figures.items():
        if is_table(value):
            found.append((f"{prefix}{key}", value))
        elif isinstance(value, dict):
            found += tables(value, f"{prefix}{key}.")
    return found


def targets(figures: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The "targets" rows, and any nested dict that states a "target" and whether it "holds"."""
    found = list(figures["targets"]) if is_table(figures.get("targets")) else []
    if "target" in figures and "holds" in figures:
        found.append({"target": figures["target"], "figure": figures.get("figure"), "holds": figures["holds"]})
    for value in figures.values():
        if isinstance(value, dict):
            found += targets(value)
    return found


def render(name: str, figures: Dict[str, Any]) -> List[str]:
    """A section as markdown: loose figures in one two-column table, then each table."""
    lines = [f"### {name}", ""]
    figures = {key: value for key, value in figures.items() if key != "targets"}
    loose = [{"figure": key, "value": value} for key, value in flat(figures).items()]
    if loose:
        lines += table(loose) + [""]
    for key, rows in tables(figures):
        lines += [f"{key}:", ""] + table(rows) + [""]
    return lines


def run_section(name: str) -> Dict[str, Any]:
    started = time.monotonic()
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    module = importlib.import_module(f"bench.{name}")
    figures = module.run()
    if not isinstance(figures, dict):
        raise TypeError(f"bench.{name}.run() returned {type(figures).__name__}, not a dict")
    print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument("--json", default="bench-results.json", help="where to write the figures (default: %(default)s)")
    p.add_argument("--only", action="append", default=[], metavar="SECTION",
                   help="run only this section; repeatable (sections: " + ", ".join(section_names()) + ")")
    p.add_argument("--skip", action="append", default=[], metavar="SECTION", help="leave a section out; repeatable")
    args = p.parse_args(argv)
    names = [name for name in args.only or section_names() if name not in args.skip]
    results: Dict[str, Any] = {
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "load average before": os.getloadavg()[0],
        "sections": {}, "targets": [], "errors": {}}
    for name in names:
        try:
            figures = run_section(name)
        except Exception:   # one broken section must not lose the others' figures
            results["errors"][name] = traceback.format_exc()
            print(f"bench: {name} failed:\n{results['errors'][name]}", file=sys.stderr)
            continue
        results["sections"][name] = figures
        results["targets"] += [{"section": name, **t} for t in targets(figures)]
    results["load average after"] = os.getloadavg()[0]
    lines = [f"Benchmarks of {results['date']} on {results['machine']}; load average (1 min) "
             f"{results['load average before']:.2f} before, {results['load average after']:.2f} after", ""]
    for name, figures in results["sections"].items():
        lines += render(name, figures)
    if results["targets"]:
        lines += ["### targets", ""] + table(results["targets"]) + [""]
    for name in results["errors"]:
        lines.append(f"section {name} FAILED (see the log above)")
    print("\n".join(lines))
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {Path(args.json).resolve()}")
    missed = [str(t.get("target")) for t in results["targets"] if t.get("holds") is False]
    print(f"targets: {len(results['targets']) - len(missed)} of {len(results['targets'])} hold"
          + "".join(f"\n  missed: {target}" for target in missed))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
