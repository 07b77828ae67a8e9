"""sdm_detect: scan an RS485 bus for meters and print the -d list for sdm630_httpd.

The bus is a serial adapter (-s /dev/ttyUSB0) or a gateway on the network:
-s rtu+tcp://HOST:PORT (transparent, raw RTU frames) or -s tcp://HOST[:502]
(Modbus TCP); -c then names the serial settings behind the gateway.
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
from ..framing import make_link
from ..transport import Link, TransportError, comset, comset_label
from ..transport.tcp import is_tcp_port
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
             setting: str = "") -> List[Found]:
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


def scan_setting(link: Link, number: int, ids: List[int], args: argparse.Namespace, label: str) -> List[Found]:
    """Open the link at one line setting, scan, close; ``label`` is set when several settings are scanned."""
    link.open()
    log.info("scanning %d ids (%s) on %s at %s", len(ids), args.ids, link.port, comset_label(comset(number)))
    # a gateway's forwarding comes on top of the meter's own turnaround
    turnaround = args.turnaround / 1000 + link.cost.round_trip
    try:
        return run_scan(Scanner(link, turnaround), ids, args.verbose, sys.stdout, label,
                        comset_label(comset(number)) if label else "")
    finally:
        link.close()


def link_at(port: str, number: int) -> Link:
    line = comset(number)
    return make_link(port, line.baud, line.parity)


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
        link = link_at(args.serialadapter, args.comset[0])
    except ValueError as err:
        print(f"sdm_detect: {err}", file=sys.stderr)
        return 2
    several = len(args.comset) > 1
    started = time.monotonic()
    found: List[Tuple[int, Found]] = []
    try:
        for index, number in enumerate(args.comset, start=1):
            label = f"[{index}/{len(args.comset)}] {comset_label(comset(number))}" if several else ""
            link = link_at(args.serialadapter, number)
            found += [(number, meter) for meter in scan_setting(link, number, ids, args, label)]
    except TransportError as err:
        print(f"sdm_detect: {err}", file=sys.stderr)
        if is_tcp_port(args.serialadapter):     # a gateway that hangs up on what it cannot parse
            print(f"sdm_detect: {what_to_check(link, several)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdm_detect: interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    tried = ", ".join(str(comset(n)) for n in args.comset)
    if not found:
        where = f" at {tried}" if several else ""
        print(f"No meter found on {len(ids)} ids{where} in {elapsed:.1f} s. {what_to_check(link, several)}")
        return 1
    print(f"Found {len(found)} meter(s) in {elapsed:.1f} s; for sdm630_httpd:\n{suggestion(found, several)}")
    return 0


def what_to_check(link: Link, several: bool) -> str:
    comsets = "-c, or -c all" if several else "-c"
    hint = getattr(link, "hint", None)
    if hint:
        return f"The gateway: {hint}."
    if is_tcp_port(link.port):
        return (f"Check the gateway's serial settings ({comsets}), its mode (rtu+tcp:// for a transparent "
                "gateway, tcp:// for Modbus TCP), the wiring behind it and the ids.")
    return f"Check the wiring (A/B), the comset ({comsets}) and the ids."


if __name__ == "__main__":
    sys.exit(main())
