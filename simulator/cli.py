"""sdm_simulator: virtual MODBUS meters on a pty and/or behind simulated network gateways
(Modbus TCP, transparent RTU over TCP), for running the gateway without hardware."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

from sdm.detect import parse_ids
from sdm.meters.model import MeterModel
from sdm.meters.registry import parse_device_list
from sdm.sanity import COUNTERS
from sdm.transport import Comset

from .faults import FaultInjector, PluggableLine, ServedLog, parse_faults, parse_offline, parse_window
from .meters import LineSetting, VirtualMeter
from .multidrop import MultiDrop
from .pacing import paced, pacing_for
from .physics import NO_GLITCHES, EnergyGlitches, Physics
from .tcp import GatewayServer, SimBus
from .timing import Tempers, parse_min_pause, parse_sulk, parse_turnaround

log = logging.getLogger("sdm_simulator")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm_simulator", description=__doc__)
    p.add_argument("--link", help="path of the symlink to the pty end a gateway opens")
    p.add_argument("--tcp", metavar="HOST:PORT",
                   help="also (or instead) serve the meters as a Modbus TCP gateway on this address; "
                        "port 0 picks a free one (see --port-file)")
    p.add_argument("--rtu-tcp", metavar="HOST:PORT",
                   help="also (or instead) serve the meters as a transparent RTU-over-TCP gateway")
    p.add_argument("--gateway-latency-ms", type=float, default=0.0,
                   help="a TCP gateway's own forwarding time, added to every reply (default: %(default)s)")
    p.add_argument("--port-file", metavar="PATH",
                   help="write the TCP gateways' ports as tcp://HOST:PORT / rtu+tcp://HOST:PORT lines, "
                        "once they listen")
    p.add_argument("-d", "--device_list", default="sdm630:1",
                   help="virtual meters as TYPE:ID[,TYPE:ID...] (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="make the values reproducible")
    p.add_argument("--no-meter-code", default="", metavar="ID[,ID...]",
                   help="Eastron meters that do not answer the meter-code register 0xFC02")
    p.add_argument("--faults", default="", metavar="FAULT=P[,...]",
                   help="fault probabilities per request: crc, silent, late, truncated, garbage, exception, "
                        "wrong_id, or all (spread evenly); e.g. all=0.05 or crc=0.01,late=0.01")
    p.add_argument("--offline", action="append", default=[], metavar="ID@FROM-TO",
                   help="meter ID stays silent from FROM to TO seconds after start; repeatable")
    p.add_argument("--unplug", action="append", default=[], metavar="FROM-TO",
                   help="close the pty from FROM to TO seconds after start, then come back on a new "
                        "pty behind the same link; repeatable (pty only)")
    p.add_argument("--served-log", metavar="PATH",
                   help="write every request, its outcome and the values served as JSON lines")
    p.add_argument("--garbage-id", default="", metavar="ID[,ID...]",
                   help="ids that answer every request with random bytes (a broken device)")
    p.add_argument("--energy-drop", type=float, default=None, metavar="S",
                   help="S seconds after start, every energy counter falls to half (tests a glitching meter)")
    p.add_argument("--energy-spike", type=float, default=None, metavar="S",
                   help="S seconds after start, every energy counter reads 1000 times its value once (good CRC)")
    p.add_argument("--energy-zero", type=float, default=None, metavar="S",
                   help="S seconds after start, every energy counter reads 0 once")
    p.add_argument("--energy-nan", type=float, default=None, metavar="S",
                   help="S seconds after start, every energy counter reads NaN once (good CRC)")
    p.add_argument("--energy-reset", type=float, default=None, metavar="S",
                   help="S seconds after start, every energy counter restarts from 0 and counts on (a real reset)")
    p.add_argument("--energy-wrap", type=float, default=None, metavar="S",
                   help="counters in wrapping registers (DZG's uint32) start just below their register "
                        "limit, so that they roll over to 0 about S seconds after start")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request and answer")
    p.add_argument("--baud", type=int, default=None,
                   help="answer at this line rate, as a real RS485 line would (default: at once)")
    p.add_argument("--parity", choices=("N", "E"), default="N",
                   help="N: 10 bits per character (8N1), E: 11 (8E1); with --baud (default: %(default)s)")
    p.add_argument("--turnaround-ms", type=float, default=0.0,
                   help="the meters' own delay before answering, with --baud (default: %(default)s)")
    p.add_argument("--turnaround", action="append", default=[], metavar="ID=MS[-MS][+MS@P]",
                   help="meter ID's own turnaround: fixed, uniform in a range, and now and then a long one "
                        "(e.g. 1=20-40+400@0.01); repeatable; with --baud")
    p.add_argument("--min-pause", action="append", default=[], metavar="ID=MS[:garble]",
                   help="meter ID ignores (or, with :garble, answers garbled) a request sooner than MS "
                        "after its last answer; repeatable; with --baud")
    p.add_argument("--sulk", action="append", default=[], metavar="ID=MS:S",
                   help="meter ID stops answering for S seconds after a request sooner than MS after its "
                        "last answer; repeatable; with --baud")
    p.add_argument("--set-mode", action="store_true",
                   help="SDM120s are in their set mode (button held): they accept settings writes")
    p.add_argument("--bus-endpoints", type=int, default=0, metavar="N",
                   help="a virtual multi-drop bus: N pty endpoints (--link, then LINK.2, LINK.3, ...) and "
                        "the meters on one line at --baud (default 9600); bytes reach every other station "
                        "at the line rate, overlapping senders garble each other")
    p.add_argument("--master", metavar="TYPE:ID@RATE",
                   help="with --bus-endpoints: a foreign master polling meter ID like an inverter, RATE "
                        "requests a second (e.g. sdm630:1@14); SIGUSR2 pauses and resumes it")
    p.add_argument("--bus-counts", metavar="PATH",
                   help="with --bus-endpoints: keep the bytes each station sent (and the master's "
                        "outcomes) in this JSON file")
    p.add_argument("--power-cycle-after-write", type=float, default=None, metavar="S",
                   help="power-cycle a meter S seconds after a settings write (SIGHUP or SIGUSR1 "
                        "power-cycles every meter at any time)")
    return p


def _ids(text: str) -> List[int]:
    """An optional id list (``1,5,20-30``); empty for an empty flag."""
    return parse_ids(text) if text.strip() else []


def glitches_from_args(args: argparse.Namespace) -> EnergyGlitches:
    """The counter glitches of the --energy-* flags (ValueError for a negative time)."""
    glitches = EnergyGlitches(drop=args.energy_drop, spike=args.energy_spike, zero=args.energy_zero,
                              nan=args.energy_nan, reset=args.energy_reset, wrap=args.energy_wrap)
    for kind, at in vars(glitches).items():
        if at is not None and not (math.isfinite(at) and at >= 0):
            raise ValueError(f"--energy-{kind} must be 0 or more seconds, not {at}")
    return glitches


def counter_limits(model: MeterModel) -> Dict[str, float]:
    """The counters of a model whose registers wrap, and the value each wraps at."""
    return {reg.name: reg.encoding.wraps_at for reg in model.registers
            if reg.name in COUNTERS and reg.encoding.wraps_at is not None}


def build_meters(device_list: str, seed: Optional[int], no_code: List[int],
                 glitches: EnergyGlitches = NO_GLITCHES, line: Optional[LineSetting] = None,
                 set_mode: bool = False) -> Dict[int, VirtualMeter]:
    meters = {}
    devices = parse_device_list(device_list)
    if glitches.wrap is not None and not any(counter_limits(model) for _, model, _ in devices):
        raise ValueError("--energy-wrap: no meter of -d has a counter that can wrap "
                         "(float32 counters never do; DZG's uint32 counters can)")
    for _, model, slave in devices:
        physics = Physics(phases=model.phases, seed=None if seed is None else seed * 1000 + slave,
                          glitches=glitches, counter_limits=counter_limits(model))
        meters[slave] = VirtualMeter(model, slave, physics, answer_meter_code=slave not in no_code,
                                     line=line if offers(model, line) else None, set_mode=set_mode)
    return meters


def tempers_from_args(args: argparse.Namespace) -> Optional[Tempers]:
    """The per-meter timing behaviour of --turnaround, --min-pause and --sulk (ValueError if bad)."""
    tempers = Tempers(dict(map(parse_turnaround, args.turnaround)), dict(map(parse_min_pause, args.min_pause)),
                      dict(map(parse_sulk, args.sulk)), args.seed)
    if not any(True for _ in tempers.slaves):
        return None
    if args.baud is None:
        raise ValueError("--turnaround, --min-pause and --sulk need --baud (a line with wire time)")
    return tempers


def check_lines(args: argparse.Namespace) -> None:
    """At least one place to serve on; pty-only options need the pty."""
    if not (args.link or args.tcp or args.rtu_tcp):
        raise ValueError("give --link, --tcp or --rtu-tcp (or several)")
    if args.unplug and not args.link:
        raise ValueError("--unplug pulls out the pty: it needs --link")
    if args.gateway_latency_ms < 0:
        raise ValueError("--gateway-latency-ms must not be negative")
    if args.bus_endpoints < 0 or (args.bus_endpoints and not args.link):
        raise ValueError("--bus-endpoints N needs --link and N >= 1")
    if (args.master or args.bus_counts) and not args.bus_endpoints:
        raise ValueError("--master and --bus-counts need --bus-endpoints")
    if args.bus_endpoints and args.unplug:
        raise ValueError("--unplug and --bus-endpoints do not go together")


def start_gateways(args: argparse.Namespace, bus: SimBus) -> List[GatewayServer]:
    """Listen on --tcp and --rtu-tcp; a port that cannot be bound is an OSError."""
    servers: List[GatewayServer] = []
    try:
        for kind, address in (("tcp", args.tcp), ("rtu+tcp", args.rtu_tcp)):
            if address:
                servers.append(GatewayServer(kind, address, bus).start())
    except (OSError, ValueError):
        for server in servers:
            server.stop()
        raise
    return servers


def write_port_file(path: Optional[str], servers: List[GatewayServer]) -> None:
    """Written whole and then renamed, so a reader never sees half of it."""
    if not path:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        out.writelines(f"{server.url}\n" for server in servers)
    os.replace(tmp, path)


def offers(model: MeterModel, line: Optional[LineSetting]) -> bool:
    """Whether the model can be set to ``line`` (a model without settings, or without that baud
    rate, answers at any rate, as every meter did before settings were modelled)."""
    if line is None or not model.settings:
        return False
    return (model.setting("baud").code_for(str(line.baud)) is not None
            and model.setting("parity").code_for(line.parity) is not None)


class MultiDropLine:
    """The meters' station on a virtual multi-drop bus, closing the bus with it."""

    def __init__(self, bus: MultiDrop):
        self.bus = bus
        self.master = bus.master
        self.slave_path = bus.slave_path
        self.read = bus.meters_line.read
        self.write = bus.meters_line.write

    def close(self) -> None:
        self.bus.close()


def multidrop_line(args: argparse.Namespace) -> MultiDropLine:
    """Start the virtual bus of --bus-endpoints (with --master); the meters answer on its line."""
    char_time = Comset(args.baud or 9600, args.parity).char_time
    return MultiDropLine(MultiDrop(args.link, args.bus_endpoints, char_time, args.master, args.bus_counts).start())


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    servers: List[GatewayServer] = []
    line = None
    try:
        check_lines(args)
        pacing = pacing_for(args.baud, args.parity, args.turnaround_ms / 1000.0)
        no_code = _ids(args.no_meter_code)
        garbage = _ids(args.garbage_id)
        if args.power_cycle_after_write is not None and args.power_cycle_after_write < 0:
            raise ValueError("--power-cycle-after-write must not be negative")
        line_setting = LineSetting(args.baud, args.parity + "1") if args.baud else None
        meters = build_meters(args.device_list, args.seed, no_code, glitches_from_args(args), line_setting,
                              args.set_mode)
        clash = set(garbage) & set(meters)
        if clash:
            raise ValueError(f"--garbage-id {min(clash)} is also a meter of -d")
        faults = parse_faults(args.faults)
        offline = [parse_offline(item) for item in args.offline]
        unplugged = [parse_window(item) for item in args.unplug]
        served = ServedLog(open(args.served_log, "w", encoding="utf-8") if args.served_log else None)
        injector = FaultInjector(meters, faults, args.seed, offline, served, started)
        bus = SimBus(meters, garbage, args.seed, injector, threading.Lock(), pacing, args.gateway_latency_ms / 1000,
                     tempers_from_args(args))
        servers = start_gateways(args, bus)
        write_port_file(args.port_file, servers)
        if args.bus_endpoints:
            line = multidrop_line(args)
        elif args.link:
            line = paced(PluggableLine(args.link, unplugged, served, started), pacing)
    except (ValueError, OSError) as err:
        for server in servers:
            server.stop()
        print(f"sdm_simulator: {err}", file=sys.stderr)
        return 2
    stopped = threading.Event()
    loop = bus.slave_loop(line, args.power_cycle_after_write) if line is not None else None

    def stop(*_):
        stopped.set()
        if loop is not None:
            loop.running = False

    def power_cycle(*_):
        if loop is not None:
            loop.power_cycle_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, power_cycle)
    signal.signal(signal.SIGUSR1, power_cycle)
    master = getattr(line, "master", None)
    if master is not None:
        signal.signal(signal.SIGUSR2, lambda *_: master.toggle())
    described = ", ".join(f"{m.model.model}:{slave}" for slave, m in sorted(meters.items()))
    pace = f" at {args.baud} 8{args.parity}1" if args.baud else ""
    places = [f"{args.link} -> {line.slave_path}"] if line is not None else []
    places += [server.url for server in servers]
    log.info("serving %s on %s%s", described, ", ".join(places), pace)
    try:
        if loop is not None:
            loop.serve_forever()
        else:
            while not stopped.wait(0.2):
                pass
    finally:
        for server in servers:
            server.stop()
        if line is not None:
            line.close()
        served.close()
    log.info("stopped; outcomes %s", injector.counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
