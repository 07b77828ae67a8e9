"""sdm630_logger: record a gateway's meter values into an SQLite file, inspect it, export it as TSV.

  sdm630_logger record  -u localhost:8080 -f log.db -s 120
  sdm630_logger inspect -f log.db
  sdm630_logger export  -f log.db -t log.tsv [--device 1,26] [--from 2024-05-01] [--to 2024-05-02]

Exit status: 0 on success, 1 when there is nothing to show or a final store
failed, 2 on bad input (missing or foreign file, unwritable path,
unreachable gateway, file in use).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import datetime, timedelta
from typing import List, Optional

from ..detect import parse_ids
from ..follow import EPOCH, Follower, FollowError, local_time
from ..recorder import Recorder, write_tsv
from ..store import Reader, StoreError, Writer
from .common import setup_logging

log = logging.getLogger("sdm630_logger")

def record(args: argparse.Namespace) -> int:
    if not 1 <= args.timeout <= 120:
        raise ValueError(f"--timeout {args.timeout} is not within 1-120 s")
    if not args.sleeptime > 0:
        raise ValueError(f"--sleeptime {args.sleeptime:g} must be more than 0 s")
    follower = Follower(args.url, args.category, args.timeout)
    writer = Writer(args.dbfile)
    try:
        follower.since = writer.last_time()    # resume: what the gateway's buffer still holds
        recorder = Recorder(writer, follower, args.sleeptime)
        signal.signal(signal.SIGTERM, recorder.on_signal)
        signal.signal(signal.SIGINT, recorder.on_signal)
        stored = recorder.run()
    finally:
        writer.close()
    if not stored:
        print(f"sdm630_logger: {len(recorder.pending)} values could not be stored", file=sys.stderr)
        return 1
    log.info("stopped")
    return 0


def inspect(args: argparse.Namespace) -> int:
    summary = Reader(args.dbfile).summary()
    if not summary.count or summary.first is None or summary.last is None:
        print(f"sdm630_logger: {args.dbfile} holds no values yet", file=sys.stderr)
        return 1
    print(f"{args.dbfile}: {summary.count} values from {len(summary.devices)} device(s)")
    print(f"First value: {local_time(summary.first)}")
    print(f"Last value:  {local_time(summary.last)}")
    for device in summary.devices:
        print(f"Device {device.device}: {device.count} values, {local_time(device.first)} to "
              f"{local_time(device.last)}, {len(device.names)} measurements: {', '.join(device.names)}")
    return 0


def parse_time(text: Optional[str], flag: str) -> Optional[int]:
    """ISO 8601 date or time (local time unless it has an offset), or ms since the epoch."""
    if text is None:
        return None
    if text.strip().isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a time (use e.g. 2024-05-01 or 2024-05-01T12:00)") from None
    return (moment.astimezone() - EPOCH) // timedelta(milliseconds=1)


def export(args: argparse.Namespace) -> int:
    reader = Reader(args.dbfile)
    devices = parse_ids(args.device) if args.device else None
    start, end = parse_time(args.from_time, "--from"), parse_time(args.to_time, "--to")
    names = reader.columns(devices, start, end)
    if not names:
        print(f"sdm630_logger: no values in {args.dbfile} match", file=sys.stderr)
        return 1
    try:
        out = sys.stdout if args.tsv == "-" else open(args.tsv, "w", encoding="utf-8", newline="")
    except OSError as err:
        raise ValueError(f"cannot write {args.tsv}: {err.strerror}") from None
    try:
        rows = write_tsv(out, names, reader, devices, start, end)
    finally:
        if out is not sys.stdout:
            out.close()
    log.info("exported %d rows of %d measurements to %s", rows, len(names), args.tsv)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm630_logger", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log more")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    rec = commands.add_parser("record", aliases=["r"], parents=[verbose],
                              help="follow the gateway's /firehose and store every value")
    rec.add_argument("-u", "--url", default="localhost:8080", help="gateway, host:port (default: %(default)s)")
    rec.add_argument("-c", "--category", default="meterupdate", help="firehose category (default: %(default)s)")
    rec.add_argument("-f", "--dbfile", default="log.db", help="SQLite file (default: %(default)s)")
    rec.add_argument("-t", "--timeout", type=int, default=45, help="long-poll timeout, 1-120 s (default: %(default)s)")
    rec.add_argument("-s", "--sleeptime", type=float, default=120,
                     help="seconds between two stores (default: %(default)g); also stores at 10,000 values")
    rec.set_defaults(run=record)

    ins = commands.add_parser("inspect", aliases=["i"], parents=[verbose], help="what a file holds")
    ins.add_argument("-f", "--dbfile", default="log.db", help="SQLite file (default: %(default)s)")
    ins.set_defaults(run=inspect)

    exp = commands.add_parser("export", aliases=["e"], parents=[verbose],
                              help="write TSV: one row per device and read time, one column per measurement")
    exp.add_argument("-f", "--dbfile", default="log.db", help="SQLite file (default: %(default)s)")
    exp.add_argument("-t", "--tsv", default="log.tsv", help="output file, - for stdout (default: %(default)s)")
    exp.add_argument("--device", help="only these ids, e.g. 1,26")
    exp.add_argument("--from", dest="from_time", metavar="TIME", help="from this time on (ISO 8601 or ms)")
    exp.add_argument("--to", dest="to_time", metavar="TIME", help="up to, not including, this time")
    exp.set_defaults(run=export)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.run(args)
    except (ValueError, StoreError, FollowError) as err:
        print(f"sdm630_logger: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # the reader left (| head)
        return 0


if __name__ == "__main__":
    sys.exit(main())
