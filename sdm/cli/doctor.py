"""sdm_doctor: watch and probe an RS485 bus for a while, then say what is wrong with it.

The meters come from -d (with -s and -c), from a configuration file (--config,
one bus of it: --bus), or from a running gateway's /status (--from-status URL;
stop that gateway first when it owns a serial adapter: a port has one master).
The doctor needs raw RTU frames: a serial adapter or a transparent gateway
(rtu+tcp://); a Modbus TCP gateway (tcp://) hides the line from it.

Exit status: 0 when no problem was found, 1 when one was, 2 on bad input or a
failing adapter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from dataclasses import replace
from typing import Any, Dict, List, Optional, TextIO, Tuple

from .. import config as configuration
from ..config import BusConfig, MeterConfig
from ..doctor import Doctor, diagnose, format_report, probe_comsets, report
from ..meters.registry import parse_device_list
from ..pcap import PcapWriter
from ..transport import Comset, Transport, TransportError, comset, parse_comsets
from ..transport.serial import SerialTransport
from ..transport.tcp import TcpTransport, is_tcp_port
from .common import add_serial_flags, setup_logging

BAR_WIDTH = 30


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm_doctor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_serial_flags(p)
    p.add_argument("-d", "--device_list", help="meters as TYPE:ID[,TYPE:ID...], as for sdm630_httpd")
    p.add_argument("--config", metavar="FILE", help="take port, line and meters from this configuration file")
    p.add_argument("--bus", help="the bus of --config or --from-status to examine (default: the first)")
    p.add_argument("--from-status", metavar="URL",
                   help="take them from a running gateway's /status, e.g. http://localhost:8080/status")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to watch (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=0.3,
                   help="seconds a meter may take to start answering, at most (default: %(default)s)")
    p.add_argument("--try-comsets", nargs="?", const="all", metavar="N[,N...]|all",
                   help="when the line setting looks wrong, probe the meters at these settings (default: all)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--capture", metavar="FILE",
                   help="write every frame with time, direction and verdict to FILE (pcapng; see docs)")
    return p


def _bus_of(buses: List[BusConfig], name: Optional[str]) -> BusConfig:
    for bus in buses:
        if name is None or bus.name == name:
            return bus
    raise ValueError(f"no bus named {name!r} (there are: {', '.join(b.name for b in buses)})")


def from_status(status: Dict[str, Any], bus_name: Optional[str]) -> BusConfig:
    """The bus and meters a gateway's /status describes (ValueError when it describes none)."""
    try:
        buses = status["Buses"]
        chosen = next(b for b in buses if bus_name is None or b["Name"] == bus_name)
        baud_text, _, frame = chosen.get("Line", "9600 8N1").partition(" ")
        meters = tuple(
            MeterConfig(device_id=m["Id"], type_name=m["Type"], model=parse_device_list(f"{m['Type']}:{m['Id']}")[0][1],
                        name=m["Name"], bus=chosen["Name"])
            for m in status["ConfiguredMeters"] if m.get("Bus") == chosen["Name"])
        return BusConfig(name=chosen["Name"], port=chosen["Port"], baud=int(baud_text),
                         parity=frame[1:2] or "N", meters=meters)
    except StopIteration:
        raise ValueError(f"the gateway has no bus named {bus_name!r}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ValueError(f"not a gateway's /status ({err})") from None


def fetch_status(url: str) -> Dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {url}: {err}") from None


def bus_to_examine(args: argparse.Namespace) -> BusConfig:
    """The bus from --config (with its own timeout), --from-status or -s/-c/-d (ValueError if unusable)."""
    if sum(bool(x) for x in (args.config, args.from_status, args.device_list)) != 1:
        raise ValueError("give exactly one of -d TYPE:ID,..., --config FILE or --from-status URL")
    if args.config:
        return _bus_of(list(configuration.load(args.config).buses), args.bus)
    if args.from_status:
        return replace(from_status(fetch_status(args.from_status), args.bus), timeout=args.timeout)
    line = comset(args.comset)
    meters = tuple(MeterConfig(device_id=i, type_name=t, model=m, name=f"{t.lower()}:{i}")
                   for t, m, i in parse_device_list(args.device_list))
    return BusConfig(name="bus", port=args.serialadapter, baud=line.baud, parity=line.parity, meters=meters,
                     timeout=args.timeout)


def open_line(port: str, line: Comset):
    """An open raw line to the bus (TransportError when it cannot be opened)."""
    if is_tcp_port(port):
        if not port.startswith("rtu+tcp://"):
            raise ValueError(f"{port}: a Modbus TCP gateway hides the serial line; the doctor needs a serial "
                             f"adapter or a transparent gateway (rtu+tcp://)")
        transport: Transport = TcpTransport(port, line.char_time)
    else:
        transport = SerialTransport(port, line)
    transport.open()
    return transport


class Progress:
    """A bar on a terminal, nothing elsewhere (the report follows anyway)."""

    def __init__(self, stream: TextIO, seconds: float):
        self.stream, self.seconds = stream, seconds
        self.tty = stream.isatty()
        self.shown = -1

    def __call__(self, share: float) -> None:
        filled = int(BAR_WIDTH * share)
        if self.tty and filled != self.shown:
            self.shown = filled
            self.stream.write(f"\rwatching [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                              f"{share * self.seconds:.0f}/{self.seconds:.0f} s")
            self.stream.flush()

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def examine(bus: BusConfig, args: argparse.Namespace, capture) -> Tuple[Dict[str, Any], int]:
    """Watch the bus, diagnose, try comsets if asked; the report and the exit status."""
    line = open_line(bus.port, Comset(bus.baud, bus.parity))
    writer = PcapWriter(capture) if capture else None
    progress = Progress(sys.stderr, args.duration)
    try:
        doctor = Doctor(line, bus.meters, bus.timeout, on_frame=writer.frame if writer else None)
        recording = doctor.watch(args.duration, progress)
    finally:
        progress.clear()
        line.close()
    findings = diagnose(recording)
    if args.try_comsets and any(f.code == "comset" for f in findings):
        numbers = parse_comsets(args.try_comsets)
        answered = probe_comsets(lambda n: open_line(bus.port, comset(n)), numbers, bus.meters, args.timeout)
        findings = diagnose(recording, answered)
    return report(recording, findings), 1 if findings else 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(False)
    try:
        if not 0 < args.duration <= 86400 or not 0 < args.timeout <= 10:
            raise ValueError("--duration must be 0-86400 s and --timeout 0-10 s")
        if args.try_comsets:
            parse_comsets(args.try_comsets)
        bus = bus_to_examine(args)
        if not bus.meters:
            raise ValueError(f"bus {bus.name} has no meter to examine")
        capture = open(args.capture, "wb") if args.capture else None
    except (ValueError, OSError) as err:
        print(f"sdm_doctor: {err}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        result, status = examine(bus, args, capture)
    except (TransportError, ValueError) as err:
        print(f"sdm_doctor: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sdm_doctor: interrupted after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 130
    finally:
        if capture:
            capture.close()
    print(json.dumps(result, indent=1) if args.json else format_report(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
