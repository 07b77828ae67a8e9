"""sdm630_monitor: follow a gateway's firehose and print the power of one meter as it is read.

One line per read that carries power values: L1, L2, L3 and the total, with
the read time.  It follows with ``since_time``, so nothing is lost between two
polls; it survives a gateway restart (it says so once, and once when it is
back) and ends quietly on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from typing import Callable, Dict, Iterable, List, Optional

POWER = {"WLocPhsA": "L1", "WLocPhsB": "L2", "WLocPhsC": "L3", "TotW": "total"}
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


def base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def local_time(rfc3339: str) -> str:
    try:
        return datetime.fromisoformat(rfc3339).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except ValueError:
        return rfc3339


def watts(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1f} W"


class Monitor:
    """What the monitor knows of its meter, and the lines events make of it."""

    def __init__(self, device: int, say: Callable[[str], None] = print):
        self.device = device
        self.say = say
        self.power: Dict[str, float] = {}
        self.status: Optional[str] = None

    def line(self, read_time: str) -> str:
        phases = [self.power.get(name) for name in ("WLocPhsA", "WLocPhsB", "WLocPhsC")]
        total = self.power.get("TotW")
        if total is None and any(v is not None for v in phases):
            total = sum(v for v in phases if v is not None)
        return (f"{local_time(read_time)} device {self.device}: L1 {watts(phases[0])}  L2 {watts(phases[1])}  "
                f"L3 {watts(phases[2])}  total {watts(total)}")

    def events(self, events: Iterable[dict]) -> None:
        """Print one line per read of our meter that changed its power, and status changes."""
        read_time = None
        for event in events:
            data = event.get("data")
            if event.get("category") == "statusupdate" and isinstance(data, dict):
                self.configured(data.get("ConfiguredMeters", []))
                continue
            if not isinstance(data, dict) or data.get("DeviceId") != self.device:
                continue
            if read_time is not None and data.get("ReadTimestamp") != read_time:
                self.say(self.line(read_time))
                read_time = None
            if data.get("IEC61850") in POWER:
                self.power[data["IEC61850"]] = data["Value"]
                read_time = data["ReadTimestamp"]
        if read_time is not None:
            self.say(self.line(read_time))

    def configured(self, meters: List[dict]) -> None:
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


class Follower:
    """Long-polls the firehose with since_time and tells about lost and regained connections."""

    def __init__(self, url: str, category: str, timeout: int, monitor: Monitor, verbose: bool = False):
        self.url = base_url(url)
        self.category = category
        self.timeout = timeout
        self.monitor = monitor
        self.verbose = verbose
        self.cursor: Optional[int] = None
        self.connected: Optional[bool] = None     # None until the first answer or failure
        self.retry = RETRY_MIN

    def get(self, path: str, timeout: float) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.load(resp)

    def poll(self) -> dict:
        path = f"/firehose?timeout={self.timeout}&category={self.category}"
        if self.cursor is not None:
            path += f"&since_time={self.cursor}"
        try:
            return self.get(path, self.timeout + 15)
        except urllib.error.HTTPError as err:   # a 400 still has the JSON error body
            return json.load(err)

    def step(self) -> Optional[str]:
        """One poll; returns an error message that should end the monitor."""
        try:
            body = self.poll()
            if self.connected is not True:
                self.came_back()
        except (OSError, ValueError) as err:
            self.lost(err)
            return None
        if "error" in body:
            return f"the gateway refused: {body['error']}"
        events = body.get("events") or []
        if events:
            self.cursor = events[-1]["timestamp"]
            if self.verbose:
                for event in events:
                    self.monitor.say(json.dumps(event))
            self.monitor.events(events)
        return None

    def came_back(self) -> None:
        self.monitor.say(f"{'reconnected to' if self.connected is False else 'following'} {self.url}")
        self.connected = True
        self.retry = RETRY_MIN
        status = self.get("/status", 10)
        self.monitor.configured(status.get("ConfiguredMeters", []))

    def lost(self, err: Exception) -> None:
        if self.connected is not False:
            what = "lost connection to" if self.connected else "cannot reach"
            self.monitor.say(f"{what} {self.url} ({err}); retrying until it is back")
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
        return Follower(args.url, args.category, args.timeout, monitor, args.verbose).run()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
