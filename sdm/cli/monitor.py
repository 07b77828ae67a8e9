"""sdm630_monitor: follow a gateway's firehose and print the power of one meter as it is read.

One line per read that carries power values: L1, L2, L3 and the total, with
the read time.  It follows with ``since_time`` (sdm.follow), so nothing is
lost between two polls; it survives a gateway restart (it says so once, and
once when it is back) and ends quietly on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from typing import Any, Callable, Dict, Iterable, List, Optional

from ..follow import BadReply, Follower, Unreachable, local_time, parse_base_url, to_sample

POWER = {"WLocPhsA": "L1", "WLocPhsB": "L2", "WLocPhsC": "L3", "TotW": "total"}
PHASES = ("WLocPhsA", "WLocPhsB", "WLocPhsC")
RETRY_MIN = 0.5
RETRY_MAX = 5.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm630_monitor", description=__doc__.split("\n\n")[0])
    p.add_argument("-u", "--url", default="localhost:8080", help="gateway host:port (default: %(default)s)")
    p.add_argument("-d", "--device", type=int, required=True, help="Modbus id of the meter to follow")
    p.add_argument("-c", "--category", default="meterupdate",
                   help="firehose category: meterupdate, statusupdate or all (default: %(default)s)")
    p.add_argument("-t", "--timeout", type=int, default=45, choices=range(1, 121), metavar="1-120",
                   help="seconds one long poll may wait (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="also print every event received")
    return p


def watts(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f} W"


class Monitor:
    """What the monitor knows of its meter, and the lines events make of it."""

    def __init__(self, device: int, say: Callable[[str], None] = print):
        self.device = device
        self.say = say
        self.power: Dict[str, float] = {}
        self.status: Optional[str] = None

    def line(self, read_ms: int) -> str:
        phases = [self.power.get(name) for name in PHASES]
        total = self.power.get("TotW")
        if total is None and any(v is not None for v in phases):
            total = sum(v for v in phases if v is not None)
        return (f"{local_time(read_ms)} device {self.device}: L1 {watts(phases[0])}  L2 {watts(phases[1])}  "
                f"L3 {watts(phases[2])}  total {watts(total)}")

    def events(self, events: Iterable[object]) -> None:
        """Print one line per read of our meter that carried power values, and status changes."""
        read_ms = None
        for event in events:
            data = event.get("data") if isinstance(event, dict) else None
            if not isinstance(event, dict):
                continue
            if event.get("category") == "statusupdate" and isinstance(data, dict):
                self.configured(data.get("ConfiguredMeters", []))
                continue
            sample = to_sample(event)
            if sample is None or sample.device != self.device:
                continue
            if read_ms is not None and sample.time != read_ms:
                self.say(self.line(read_ms))
                read_ms = None
            if sample.name in POWER:
                self.power[sample.name] = sample.value
                read_ms = sample.time
        if read_ms is not None:
            self.say(self.line(read_ms))

    def configured(self, meters: List[Dict[str, Any]]) -> None:
        """Say when our meter is unknown to the gateway, or changes availability."""
        ours = next((m for m in meters if m.get("Id") == self.device), None)
        status = "not configured" if ours is None else ours.get("Status", "?")
        if status == self.status:
            return
        if ours is None:
            ids = ", ".join(str(m.get("Id")) for m in meters) or "none"
            self.say(f"device {self.device} is not configured on the gateway (it has: {ids}); waiting")
        elif self.status is not None or status != "available":
            self.say(f"device {self.device}: {status}")
        self.status = status


def status_url(url: str) -> str:
    host, port, prefix = parse_base_url(url)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{prefix}/status"


class Watch:
    """The follow loop: polls, tells about lost and regained connections, retries with back-off."""

    def __init__(self, url: str, category: str, timeout: int, monitor: Monitor, verbose: bool = False):
        self.follower = Follower(url, category, timeout)
        self.status_url = status_url(url)
        self.monitor = monitor
        self.verbose = verbose
        self.connected: Optional[bool] = None     # None until the first answer or failure
        self.retry = RETRY_MIN

    def step(self) -> Optional[str]:
        """One poll; returns a message when the monitor should end (the gateway refused our request)."""
        try:
            reply = self.follower.fetch(self.follower.timeout)
            if self.connected is not True:
                self.came_back()
            events = self.follower.events(reply)
        except BadReply as err:
            if reply[0] == 400:
                return str(err)
            self.lost(err)
            return None
        except (Unreachable, OSError, ValueError) as err:
            self.lost(err)
            return None
        if self.verbose:
            for event in events:
                self.monitor.say(json.dumps(event))
        self.monitor.events(events)
        return None

    def came_back(self) -> None:
        self.monitor.say(f"{'reconnected to' if self.connected is False else 'following'} {self.follower.url}")
        self.connected = True
        self.retry = RETRY_MIN
        with urllib.request.urlopen(self.status_url, timeout=10) as resp:
            self.monitor.configured(json.load(resp).get("ConfiguredMeters", []))

    def lost(self, err: Exception) -> None:
        if self.connected is not False:
            what = "lost connection" if self.connected else "cannot follow the gateway"
            self.monitor.say(f"{what}: {err}; retrying until it is back")
        self.connected = False
        time.sleep(self.retry)
        self.retry = min(self.retry * 2, RETRY_MAX)

    def run(self) -> int:
        while True:
            error = self.step()
            if error:
                print(f"sdm630_monitor: {error}", file=sys.stderr)
                return 2


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    monitor = Monitor(args.device, lambda text: print(text, flush=True))
    try:
        watch = Watch(args.url, args.category, args.timeout, monitor, args.verbose)
    except ValueError as err:
        print(f"sdm630_monitor: {err}", file=sys.stderr)
        return 2
    try:
        return watch.run()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
