"""sdm_config: show a meter's identity and communication settings, or change its id, baud rate and parity.

    sdm_config -s /dev/ttyUSB0 -c 1 show 1
    sdm_config -s /dev/ttyUSB0 -c 1 set 1 id=7 baud=9600 parity=N [--dry-run] [--yes]

Exit status: 0 done, 1 refused by the meter, not confirmed, or not verified,
2 bad input, a port that cannot be opened, or one the gateway holds.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable, List, Optional

from ..configure import BAD_INPUT, REFUSED, ConfigError, Configurator, MeterSilent, Reach, Session
from ..framing import rtu
from ..meters.registry import parse_slave_id
from ..transport import Comset, TransportError, comset
from ..transport.serial import SerialTransport
from .common import add_serial_flags


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm_config", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serial_flags(p)
    p.add_argument("--type", metavar="TYPE",
                   help="meter type (sdm120, sdm630, ...) when its meter code does not prove it")
    p.add_argument("--timeout", type=float, default=500, metavar="MS",
                   help="how long the meter may take to begin its answer (default: %(default)g)")
    commands = p.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print identity and communication settings")
    show.add_argument("id", help="the meter's current MODBUS id")
    change = commands.add_parser("set", help="write settings, e.g. id=7 baud=9600 parity=N")
    change.add_argument("id", help="the meter's current MODBUS id")
    change.add_argument("settings", nargs="+", metavar="NAME=VALUE", help="id=1-247, baud=9600, parity=N|E")
    change.add_argument("--dry-run", action="store_true", help="print the frames instead of sending them")
    change.add_argument("--yes", action="store_true", help="write without asking")
    return p


def ask(prompt: str) -> bool:
    """The user's yes on the terminal; EOF or anything else is a no."""
    try:
        return input(prompt).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def held_elsewhere(err: TransportError) -> bool:
    """The open failed because another process holds the port's exclusive lock (as the gateway does)."""
    return getattr(err.__cause__, "errno", None) in (errno.EAGAIN, errno.EWOULDBLOCK)


def opener(path: str) -> Callable[[Comset], SerialTransport]:
    def open_line(settings: Comset) -> SerialTransport:
        transport = SerialTransport(path, settings)
        transport.open()
        return transport
    return open_line


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        reach = Reach(parse_slave_id(args.id), comset(args.comset))
        if not 0 < args.timeout <= 10000:
            raise ValueError(f"--timeout {args.timeout:g} ms is not within 0-10000 ms")
    except ValueError as err:
        return fail(str(err))
    if args.command == "set" and not (args.dry_run or args.yes or sys.stdin.isatty()):
        return fail("no terminal to confirm the write on: add --yes (or --dry-run to see the frames)")
    session = Session(opener(args.serialadapter), args.timeout / 1000)
    tool = Configurator(session, args.serialadapter, sys.stdout)
    try:
        if args.command == "show":
            return tool.show(reach, args.type)
        return tool.set(reach, args.settings, args.type, args.dry_run, lambda prompt: args.yes or ask(prompt))
    except ConfigError as err:
        return fail(str(err))
    except rtu.ModbusError as err:
        print(f"sdm_config: the meter at {reach} gave no usable answer ({err}); nothing was written", file=sys.stderr)
        return REFUSED
    except MeterSilent as err:
        print(f"sdm_config: {err}. Check the id and -c, or find the meter: "
              f"sdm_detect -s {args.serialadapter} --comset all", file=sys.stderr)
        return REFUSED
    except TransportError as err:
        if held_elsewhere(err):
            return fail(f"{args.serialadapter} is held by another process, most likely the gateway "
                        f"(sdm630_httpd opens its port exclusively): stop it first, then run sdm_config again")
        return fail(str(err))
    except KeyboardInterrupt:
        print("sdm_config: interrupted", file=sys.stderr)
        return 130
    finally:
        session.close()


def fail(message: str) -> int:
    print(f"sdm_config: {message}", file=sys.stderr)
    return BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
