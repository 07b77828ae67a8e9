"""sdm_demo (``make sim``): virtual meters on a pty and the gateway reading them.

Starts ``sdm_simulator`` with an SDM630 at id 1, an SDM120 at id 2 and a
Janitza B23 at id 26, then ``sdm630_httpd`` against it, prints the URL and
runs until Ctrl-C, when it stops both.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

DEVICES = "sdm630:1,sdm120:2,janitza:26"


def wait_for(path: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="sdm_demo", description=__doc__)
    p.add_argument("-u", "--url", default=":8080", help="gateway listen address (default: %(default)s)")
    p.add_argument("-d", "--device_list", default=DEVICES, help="meters (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    link = os.path.join(tempfile.mkdtemp(prefix="sdm-sim-"), "ttySIM0")
    sim_cmd = [sys.executable, "-m", __package__ or "simulator", "--link", link, "-d", args.device_list]
    if args.seed is not None:
        sim_cmd += ["--seed", str(args.seed)]
    simulator = subprocess.Popen(sim_cmd)
    if not wait_for(link, 10):
        simulator.terminate()
        print("sdm_demo: the simulator did not start", file=sys.stderr)
        return 1
    gateway = subprocess.Popen([sys.executable, "-m", "sdm.cli.httpd", "-s", link,
                                "-d", args.device_list, "-u", args.url])
    port = args.url.rsplit(":", 1)[-1]
    print(f"\n  Virtual meters {args.device_list} on {link}\n"
          f"  Gateway: http://localhost:{port}/   (try: curl localhost:{port}/last/1)\n"
          f"  Ctrl-C stops both.\n", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: gateway.terminate())
    try:
        code = gateway.wait()
    except KeyboardInterrupt:
        gateway.send_signal(signal.SIGINT)
        code = gateway.wait()
    finally:
        simulator.terminate()
        simulator.wait()
    return 0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code


if __name__ == "__main__":
    sys.exit(main())
