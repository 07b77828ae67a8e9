"""sdm_demo (``make sim``): two simulated buses and the gateway reading them from one config file.

Reads ``contrib/sdm-demo.toml`` (the file the README shows), starts one
``sdm_simulator`` per bus, on the pty path or the gateway address the file
names, with the meters the file lists, then ``sdm630_httpd --config`` on the
same file, prints the URL and runs until Ctrl-C, when it stops them all.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

from sdm.config import BusConfig, Config, load

DEMO_FILE = Path(__file__).resolve().parent.parent / "contrib" / "sdm-demo.toml"


def wait_for(ready: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ready():
            return True
        time.sleep(0.05)
    return False


def simulator_command(bus: BusConfig, seed: Optional[int]) -> List[str]:
    """The simulator that stands in for one bus: a pty at the bus's path, or a transparent gateway."""
    devices = ",".join(f"{m.type_name.lower()}:{m.device_id}" for m in bus.meters)
    cmd = [sys.executable, "-m", __package__ or "simulator", "-d", devices]
    if bus.kind == "serial":
        cmd += ["--link", bus.port]
    else:
        flag = "--rtu-tcp" if bus.kind == "rtu+tcp" else "--tcp"
        cmd += [flag, bus.port.split("://", 1)[1]]
    if seed is not None:
        cmd += ["--seed", str(seed + len(bus.name))]
    return cmd


def listen_override(text: str, url: str) -> str:
    """The demo file with the gateway's listen address replaced by ``-u``."""
    return re.sub(r'(?m)^listen = ".*"$', f'listen = "{url}"', text, count=1)


def start_simulators(config: Config, seed: Optional[int]) -> List[subprocess.Popen[bytes]]:
    started = []
    for bus in config.buses:
        if bus.kind == "serial":
            os.makedirs(os.path.dirname(bus.port), exist_ok=True)
        started.append(subprocess.Popen(simulator_command(bus, seed)))
    serial = [bus.port for bus in config.buses if bus.kind == "serial"]
    if not wait_for(lambda: all(os.path.exists(path) for path in serial), 10):
        raise RuntimeError("the simulator did not start")
    time.sleep(0.3)   # the TCP simulators bind while the pty one starts; a port in use makes them exit
    gone = [proc for proc in started if proc.poll() is not None]
    if gone:
        raise RuntimeError("a simulator exited (is its port in use?)")
    return started


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sdm_demo", description=__doc__)
    p.add_argument("-u", "--url", default=None, help="gateway listen address (default: the file's, :8080)")
    p.add_argument("--config", default=str(DEMO_FILE), help="the demo's configuration (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    if not os.path.exists(args.config):
        print(f"sdm_demo: {args.config} not found; run the demo from a checkout (make sim)", file=sys.stderr)
        return 1
    config_path = args.config
    if args.url:
        config_path = os.path.join(tempfile.mkdtemp(prefix="sdm-demo-"), "sdm-demo.toml")
        Path(config_path).write_text(listen_override(Path(args.config).read_text(), args.url))
    config = load(config_path)
    try:
        simulators = start_simulators(config, args.seed)
    except RuntimeError as err:
        print(f"sdm_demo: {err}", file=sys.stderr)
        return 1
    gateway = subprocess.Popen([sys.executable, "-m", "sdm.cli.httpd", "--config", config_path])
    port = config.http.listen.rsplit(":", 1)[-1]
    buses = "\n".join(f"    {bus.name}: {bus.port} with {', '.join(m.name for m in bus.meters)}"
                      for bus in config.buses)
    print(f"\n  Simulated buses ({config_path}):\n{buses}\n"
          f"  Gateway: http://localhost:{port}/   (try: curl localhost:{port}/last/house, "
          f"curl localhost:{port}/last/1)\n"
          f"  Ctrl-C stops them all.\n", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: gateway.terminate())
    try:
        code = gateway.wait()
    except KeyboardInterrupt:
        gateway.send_signal(signal.SIGINT)
        code = gateway.wait()
    finally:
        for simulator in simulators:
            simulator.terminate()
            simulator.wait()
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code


if __name__ == "__main__":
    sys.exit(main())
