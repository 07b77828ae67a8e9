"""Pieces every command line shares: logging set-up and the serial flags."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List

from ..transport import parse_comsets


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


COMSET_HELP = "1=2400 8N1, 2=9600 8N1, 3=19200 8N1, 4=2400 8E1, 5=9600 8E1, 6=19200 8E1"


def comset_list(text: str) -> List[int]:
    """argparse type for ``-c all`` / ``-c 1,2,5``."""
    try:
        return parse_comsets(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_serial_flags(parser: argparse.ArgumentParser, several_comsets: bool = False) -> None:
    """-s and -c; with ``several_comsets`` -c takes a list or ``all`` (a scan tries each in turn)."""
    parser.add_argument("-s", "--serialadapter", default="/dev/ttyUSB0",
                        help="serial device of the RS485 adapter (prefer a stable /dev/serial/by-id/... "
                             "path), or a network gateway: rtu+tcp://HOST:PORT (transparent) or "
                             "tcp://HOST[:PORT] (Modbus TCP) (default: %(default)s)")
    if several_comsets:
        parser.add_argument("-c", "--comset", type=comset_list, default=[2], metavar="N[,N...]|all",
                            help=f"serial settings to scan, each in turn: {COMSET_HELP}; "
                                 f"a list like 1,2,5 or all (default: 2)")
        return
    parser.add_argument("-c", "--comset", type=int, default=2, choices=range(1, 7), metavar="1-6",
                        help=f"serial settings: {COMSET_HELP} (default: %(default)s)")
