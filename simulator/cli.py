"""sdm_simulator: virtual MODBUS/RTU meters on a pty, for running the gateway without hardware."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Dict, List, Optional

from sdm.detect import parse_ids
from sdm.meters.model import MeterModel
from sdm.meters.registry import parse_device_list

from .faults import FaultInjector, PluggableLine, ServedLog, parse_faults, parse_offline, parse_window
from .meters import LineSetting, VirtualMeter
from .pacing import paced, pacing_for
from .physics import Physics
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
    p.add_argument("-v", "--verbose", action="store_true", help="log every request and answer")
    p.add_argument("--baud", type=int, default=None,
                   help="answer at this line rate, as a real RS485 line would (default: at once)")
    p.add_argument("--parity", choices=("N", "E"), default="N",
                   help="N: 10 bits per character (8N1), E: 11 (8E1); with --baud (default: %(default)s)")
    p.add_argument("--turnaround-ms", type=float, default=0.0,
                   help="the meters' own delay before answering, with --baud (default: %(default)s)")
    p.add_argument("--set-mode", action="store_true",
                   help="SDM120s are in their set mode (button held): they accept settings writes")
    p.add_argument("--power-cycle-after-write", type=float, default=None, metavar="S",
                   help="power-cycle a meter S seconds after a settings write (SIGHUP or SIGUSR1 "
                        "power-cycles every meter at any time)")
    return p


def _ids(text: str) -> List[int]:
    """An optional id list (``1,5,20-30``); empty for an empty flag."""
    return parse_ids(text) if text.strip() else []


def build_meters(device_list: str, seed: Optional[int], no_code: List[int],
                 energy_drop: Optional[float] = None, line: Optional[LineSetting] = None,
                 set_mode: bool = False) -> Dict[int, VirtualMeter]:
    meters = {}
    for _, model, slave in parse_device_list(device_list):
        physics = Physics(phases=model.phases, seed=None if seed is None else seed * 1000 + slave,
                          energy_drop_at=energy_drop)
        meters[slave] = VirtualMeter(model, slave, physics, answer_meter_code=slave not in no_code,
                                     line=line if offers(model, line) else None, set_mode=set_mode)
    return meters


def offers(model: MeterModel, line: Optional[LineSetting]) -> bool:
    """Whether the model can be set to ``line`` (a model without settings, or without that baud
    rate, answers at any rate, as every meter did before settings were modelled)."""
    if line is None or not model.settings:
        return False
    return (model.setting("baud").code_for(str(line.baud)) is not None
            and model.setting("parity").code_for(line.parity) is not None)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        pacing = pacing_for(args.baud, args.parity, args.turnaround_ms / 1000.0)
        no_code = _ids(args.no_meter_code)
        garbage = _ids(args.garbage_id)
        if args.power_cycle_after_write is not None and args.power_cycle_after_write < 0:
            raise ValueError("--power-cycle-after-write must not be negative")
        line_setting = LineSetting(args.baud, args.parity + "1") if args.baud else None
        meters = build_meters(args.device_list, args.seed, no_code, args.energy_drop, line_setting, args.set_mode)
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
    loop = SlaveLoop(line, meters, garbage, args.seed, injector, args.power_cycle_after_write)

    def stop(*_):
        loop.running = False

    def power_cycle(*_):
        loop.power_cycle_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, power_cycle)
    signal.signal(signal.SIGUSR1, power_cycle)
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
