"""Pieces every command line shares: logging set-up and the serial flags."""

from __future__ import annotations

import argparse
import logging
import sys


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def add_serial_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--serialadapter", default="/dev/ttyUSB0",
                        help="serial device of the RS485 adapter (prefer a stable /dev/serial/by-id/... "
                             "path), or a network gateway: rtu+tcp://HOST:PORT (transparent) or "
                             "tcp://HOST[:PORT] (Modbus TCP) (default: %(default)s)")
    parser.add_argument("-c", "--comset", type=int, default=2, choices=range(1, 7), metavar="1-6",
                        help="serial settings: 1=2400 8N1, 2=9600 8N1, 3=19200 8N1, "
                             "4=2400 8E1, 5=9600 8E1, 6=19200 8E1 (default: %(default)s)")
