"""sdm_simulator: virtual MODBUS/RTU meters on a pty, for running the gateway without hardware."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from typing import Dict, List, Optional

from sdm.detect import parse_ids
from sdm.meters.model import MeterModel
from sdm.meters.registry import parse_device_list
from sdm.sanity import COUNTERS

from .faults import FaultInjector, PluggableLine, ServedLog, parse_faults, parse_offline, parse_window
from .meters import VirtualMeter
from .pacing import paced, pacing_for
from .physics import NO_GLITCHES, EnergyGlitches, Physics
from .server import SlaveLoop

log = logging.getLogger("sdm_simulator")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm_simulator", description=__doc__)
    p.add_argument("--link", required=True, help="path of the symlink to the pty end a gateway opens")
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
                        "pty behind the same link; repeatable")
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
    return p


def _ids(text: str) -> List[int]:
    """An optional id list (``1,5,20-30``); empty for an empty flag."""
    return parse_ids(text) if text.strip() else []


def glitches_from_args(args: argparse.Namespace) -> EnergyGlitches:
    """The counter glitches of the --energy-* flags (ValueError for a negative time)."""
    glitches = EnergyGlitches(drop=args.energy_drop, spike=args.energy_spike, zero=args.energy_zero,
                              reset=args.energy_reset, wrap=args.energy_wrap)
    for kind, at in vars(glitches).items():
        if at is not None and not (math.isfinite(at) and at >= 0):
            raise ValueError(f"--energy-{kind} must be 0 or more seconds, not {at}")
    return glitches


def counter_limits(model: MeterModel) -> Dict[str, float]:
    """The counters of a model whose registers wrap, and the value each wraps at."""
    return {reg.name: reg.encoding.wraps_at for reg in model.registers
            if reg.name in COUNTERS and reg.encoding.wraps_at is not None}


def build_meters(device_list: str, seed: Optional[int], no_code: List[int],
                 glitches: EnergyGlitches = NO_GLITCHES) -> Dict[int, VirtualMeter]:
    meters = {}
    devices = parse_device_list(device_list)
    if glitches.wrap is not None and not any(counter_limits(model) for _, model, _ in devices):
        raise ValueError("--energy-wrap: no meter of -d has a counter that can wrap "
                         "(float32 counters never do; DZG's uint32 counters can)")
    for _, model, slave in devices:
        physics = Physics(phases=model.phases, seed=None if seed is None else seed * 1000 + slave,
                          glitches=glitches, counter_limits=counter_limits(model))
        meters[slave] = VirtualMeter(model, slave, physics, answer_meter_code=slave not in no_code)
    return meters


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        pacing = pacing_for(args.baud, args.parity, args.turnaround_ms / 1000.0)
        no_code = _ids(args.no_meter_code)
        garbage = _ids(args.garbage_id)
        meters = build_meters(args.device_list, args.seed, no_code, glitches_from_args(args))
        clash = set(garbage) & set(meters)
        if clash:
            raise ValueError(f"--garbage-id {min(clash)} is also a meter of -d")
        faults = parse_faults(args.faults)
        offline = [parse_offline(item) for item in args.offline]
        unplugged = [parse_window(item) for item in args.unplug]
        served = ServedLog(open(args.served_log, "w", encoding="utf-8") if args.served_log else None)
        line = PluggableLine(args.link, unplugged, served, started)
        line = paced(line, pacing)
    except (ValueError, OSError) as err:
        print(f"sdm_simulator: {err}", file=sys.stderr)
        return 2
    injector = FaultInjector(meters, faults, args.seed, offline, served, started)
    loop = SlaveLoop(line, meters, garbage, args.seed, injector)

    def stop(*_):
        loop.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    described = ", ".join(f"{m.model.model}:{slave}" for slave, m in sorted(meters.items()))
    pace = f" at {args.baud} 8{args.parity}1" if args.baud else ""
    log.info("serving %s on %s -> %s%s", described, args.link, line.slave_path, pace)
    try:
        loop.serve_forever()
    finally:
        line.close()
        served.close()
    log.info("stopped after %d answers; outcomes %s", loop.served, injector.counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
