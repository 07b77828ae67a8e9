"""sdm_detect: scan an RS485 bus for meters and print the -d list for sdm630_httpd.

The bus is a serial adapter (-s /dev/ttyUSB0) or a gateway on the network:
-s rtu+tcp://HOST:PORT (transparent, raw RTU frames) or -s tcp://HOST[:502]
(Modbus TCP); -c then names the serial settings behind the gateway.

Exit status: 0 when meters were found, 1 when none answered, 2 on bad input
or a failing adapter.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import List, Optional, TextIO

from ..detect import DEFAULT_TURNAROUND, Outcome, Scanner, device_list, parse_ids
from ..framing import make_link
from ..transport import TransportError, comset
from ..transport.tcp import is_tcp_port
from .common import add_serial_flags, setup_logging

log = logging.getLogger("sdm_detect")

BAR_WIDTH = 30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm_detect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serial_flags(p)
    p.add_argument("--ids", default="1-247", help="ids to scan, e.g. 1-247 or 1,5,20-30 (default: %(default)s)")
    p.add_argument("--turnaround", type=float, default=DEFAULT_TURNAROUND * 1000, metavar="MS",
                   help="how long a meter may take to begin its reply; raise it if a slow meter "
                        "is missed (default: %(default)g)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every id, not only the ones that answer")
    return p


class Progress:
    """A bar on a terminal; otherwise a log line at every tenth of the scan."""

    def __init__(self, total: int, stream: TextIO):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.done = 0
        self.found = 0

    def advance(self, outcome: Outcome) -> None:
        self.done += 1
        self.found += outcome.found is not None
        if self.tty:
            filled = BAR_WIDTH * self.done // self.total
            self.stream.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} ids, "
                              f"{self.found} found, at id {outcome.slave}")
            self.stream.flush()
        elif self.done * 10 // self.total != (self.done - 1) * 10 // self.total:
            log.info("scanned %d of %d ids, %d meter(s) found", self.done, self.total, self.found)

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_scan(scanner: Scanner, ids: List[int], verbose: bool, out: TextIO) -> list:
    progress = Progress(len(ids), sys.stderr)

    def report(outcome: Outcome) -> None:
        if outcome.found or outcome.answered or verbose:
            progress.clear()
            print(f"id {outcome.slave:3d}: {outcome.describe()}", file=out, flush=True)
        progress.advance(outcome)

    try:
        return scanner.scan(ids, report)
    finally:
        progress.clear()


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(False)
    try:
        ids = parse_ids(args.ids)
        if not 0 < args.turnaround <= 10000:
            raise ValueError(f"--turnaround {args.turnaround:g} ms is not within 0-10000 ms")
        settings = comset(args.comset)
        link = make_link(args.serialadapter, settings.baud, settings.parity)
        link.open()
    except (ValueError, TransportError) as err:
        print(f"sdm_detect: {err}", file=sys.stderr)
        return 2
    log.info("scanning %d ids (%s) on %s at %s", len(ids), args.ids, args.serialadapter, settings)
    started = time.monotonic()
    # a gateway's forwarding comes on top of the meter's own turnaround
    turnaround = args.turnaround / 1000 + link.cost.round_trip
    try:
        found = run_scan(Scanner(link, turnaround), ids, args.verbose, sys.stdout)
    except TransportError as err:
        print(f"sdm_detect: {err}", file=sys.stderr)
        if is_tcp_port(args.serialadapter):     # a gateway that hangs up on what it cannot parse
            print(f"sdm_detect: {_what_to_check(link)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdm_detect: interrupted", file=sys.stderr)
        return 130
    finally:
        link.close()
    elapsed = time.monotonic() - started
    if not found:
        print(f"No meter found on {len(ids)} ids in {elapsed:.1f} s. {_what_to_check(link)}")
        return 1
    print(f"Found {len(found)} meter(s) in {elapsed:.1f} s; for sdm630_httpd:\n  -d {device_list(found)}")
    return 0


def _what_to_check(link) -> str:
    if link.hint:
        return f"The gateway: {link.hint}."
    if is_tcp_port(link.port):
        return ("Check the gateway's serial settings (-c), its mode (rtu+tcp:// for a transparent "
                "gateway, tcp:// for Modbus TCP), the wiring behind it and the ids.")
    return "Check the wiring (A/B), the comset (-c) and the ids."


if __name__ == "__main__":
    sys.exit(main())
