"""sdm_detect: scan an RS485 bus for meters and print the -d list for sdm630_httpd.

With ``-c all`` (or a list such as ``-c 1,2,5``) each line setting is scanned
in turn, to find meters whose settings are unknown.

Exit status: 0 when meters were found, 1 when none answered, 2 on bad input
or a failing adapter.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import List, Optional, TextIO, Tuple

from ..detect import DEFAULT_TURNAROUND, Found, Outcome, Scanner, device_list, parse_ids
from ..transport import TransportError, comset, comset_label
from ..transport.serial import SerialTransport
from .common import add_serial_flags, setup_logging

log = logging.getLogger("sdm_detect")

BAR_WIDTH = 30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm_detect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serial_flags(p, several_comsets=True)
    p.add_argument("--ids", default="1-247", help="ids to scan, e.g. 1-247 or 1,5,20-30 (default: %(default)s)")
    p.add_argument("--turnaround", type=float, default=DEFAULT_TURNAROUND * 1000, metavar="MS",
                   help="how long a meter may take to begin its reply; raise it if a slow meter "
                        "is missed (default: %(default)g)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every id, not only the ones that answer")
    return p


class Progress:
    """A bar on a terminal; otherwise a log line at every tenth of the scan.  ``label`` names the
    line setting being tried when a scan tries several."""

    def __init__(self, total: int, stream: TextIO, label: str = ""):
        self.total = total
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.done = 0
        self.found = 0

    def advance(self, outcome: Outcome) -> None:
        self.done += 1
        self.found += outcome.found is not None
        if self.tty:
            filled = BAR_WIDTH * self.done // self.total
            prefix = f"{self.label} " if self.label else ""
            self.stream.write(f"\r{prefix}[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} ids, "
                              f"{self.found} found, at id {outcome.slave}")
            self.stream.flush()
        elif self.done * 10 // self.total != (self.done - 1) * 10 // self.total:
            where = f" at {self.label}" if self.label else ""
            log.info("scanned %d of %d ids%s, %d meter(s) found", self.done, self.total, where, self.found)

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_scan(scanner: Scanner, ids: List[int], verbose: bool, out: TextIO, label: str = "",
             setting: str = "") -> list:
    """Scan ``ids`` on one line setting, printing what answers; ``label`` heads the progress bar,
    ``setting`` (when several are scanned) follows each meter found."""
    progress = Progress(len(ids), sys.stderr, label)
    suffix = f", at {setting}" if setting else ""

    def report(outcome: Outcome) -> None:
        if outcome.found or outcome.answered or verbose:
            progress.clear()
            print(f"id {outcome.slave:3d}: {outcome.describe()}{suffix}", file=out, flush=True)
        progress.advance(outcome)

    try:
        return scanner.scan(ids, report)
    finally:
        progress.clear()


def scan_setting(path: str, number: int, ids: List[int], args, label: str) -> List[Found]:
    """Open the port at one line setting, scan, close; ``label`` is set when several settings are scanned."""
    transport = SerialTransport(path, comset(number))
    transport.open()
    log.info("scanning %d ids (%s) on %s at %s", len(ids), args.ids, path, comset_label(comset(number)))
    try:
        return run_scan(Scanner(transport, args.turnaround / 1000), ids, args.verbose, sys.stdout, label,
                        comset_label(comset(number)) if label else "")
    finally:
        transport.close()


def suggestion(found: List[Tuple[int, Found]], several: bool) -> str:
    """The flags for sdm630_httpd: ``-d ...``, or one ``-c N -d ...`` line per setting that found meters."""
    if not several:
        return f"  -d {device_list([meter for _, meter in found])}"
    numbers = list(dict.fromkeys(number for number, _ in found))
    return "\n".join(f"  -c {n} -d {device_list([m for k, m in found if k == n])}" for n in numbers)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(False)
    try:
        ids = parse_ids(args.ids)
        if not 0 < args.turnaround <= 10000:
            raise ValueError(f"--turnaround {args.turnaround:g} ms is not within 0-10000 ms")
    except ValueError as err:
        print(f"sdm_detect: {err}", file=sys.stderr)
        return 2
    several = len(args.comset) > 1
    started = time.monotonic()
    found: List[Tuple[int, Found]] = []
    try:
        for index, number in enumerate(args.comset, start=1):
            label = f"[{index}/{len(args.comset)}] {comset_label(comset(number))}" if several else ""
            found += [(number, meter) for meter in scan_setting(args.serialadapter, number, ids, args, label)]
    except TransportError as err:
        print(f"sdm_detect: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdm_detect: interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    tried = ", ".join(str(comset(n)) for n in args.comset)
    if not found:
        print(f"No meter found on {len(ids)} ids at {tried} in {elapsed:.1f} s. Check the wiring (A/B), "
              f"the comset (-c, or -c all) and the ids." if several else
              f"No meter found on {len(ids)} ids in {elapsed:.1f} s. Check the wiring (A/B), "
              f"the comset (-c) and the ids.")
        return 1
    print(f"Found {len(found)} meter(s) in {elapsed:.1f} s; for sdm630_httpd:\n{suggestion(found, several)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
