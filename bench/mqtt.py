"""MQTT on the three-meter bus (SDM630, SDM120, Janitza): delay and CPU cost.

Runs of sdm630_httpd of WINDOW seconds each on the same bus: MQTT off; MQTT
on (state JSON + Home Assistant discovery) with mosquitto as Debian configures
it; the same with mosquitto's ``set_tcp_nodelay true`` (by default the broker
holds small messages back for the subscriber's delayed ACK, up to ~40 ms);
and with per-value topics too.  A paho subscriber in this process takes the delay from a meter
read (the state's Timestamp, set when the reply completing the reading was
booked) to the arrival of its state message; the gateway's CPU comes from
/proc.  The bus is paced at 9600 8N1 when the simulator can (``--baud``),
else it answers at once and the poller only waits its per-meter pauses.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional

from bench.common import cpu_seconds, percentile, sim_flags
from sdm.transport import comset
from tests.mqtt_support import Broker, Subscriber, require_mosquitto
from tests.support import Gateway, Simulator

BUS = "sdm630:1,sdm120:2,janitza:26"
WINDOW = 20.0       # seconds measured per run
WARM_UP = 2.0


def complete_readings(gw: Gateway) -> int:
    return sum(m["CompleteReadings"] for m in gw.get("/status").json()["ConfiguredMeters"])


def measure(workdir: Path, link: Path, name: str, extra: List[str], broker: Optional[Broker]) -> Dict:
    """One gateway run: CPU % of one core over WINDOW, readings/s, and state delays when MQTT is on."""
    gw = Gateway(str(link), BUS, extra, log_path=workdir / f"httpd-{name}.log")
    sub = Subscriber(broker.port, ["sdm630/+/state"]) if broker else None
    try:
        gw.start()
        time.sleep(WARM_UP)
        cpu0, readings0, t0 = cpu_seconds(gw.proc.pid), complete_readings(gw), time.monotonic()
        seen0 = len(sub.messages) if sub else 0
        time.sleep(WINDOW)
        cpu1, readings1, t1 = cpu_seconds(gw.proc.pid), complete_readings(gw), time.monotonic()
        messages = sub.messages[seen0:] if sub else []
    finally:
        gw.stop()
        if sub:
            sub.close()
    delays = [1000.0 * (m.at - datetime.fromisoformat(m.text().split('"Timestamp":"')[1].split('"')[0]).timestamp())
              for m in messages]
    row = {"run": name, "cpu % of one core": 100.0 * (cpu1 - cpu0) / (t1 - t0),
           "complete readings/s": (readings1 - readings0) / (t1 - t0),
           "CPU ms per reading": 1000.0 * (cpu1 - cpu0) / max(1, readings1 - readings0)}
    if broker:
        row.update({"state messages/s": len(messages) / (t1 - t0), "delay p50 ms": percentile(delays, 0.5),
                    "delay p99 ms": percentile(delays, 0.99), "delay max ms": max(delays, default=None)})
    return row


def run() -> Dict:
    workdir = Path(tempfile.mkdtemp(prefix="sdm-bench-mqtt-"))
    binary = require_mosquitto()
    plain = Broker(binary, workdir).start()
    nodelay = Broker(binary, workdir, extra_config="set_tcp_nodelay true\n").start()
    sim = Simulator(workdir / "tty", BUS, sim_flags(comset(2))).start()
    try:
        runs = [measure(workdir, sim.link, "MQTT off", [], None),
                measure(workdir, sim.link, "MQTT on", ["-b", plain.url, "--ha-discovery"], plain),
                measure(workdir, sim.link, "MQTT on, broker nodelay", ["-b", nodelay.url, "--ha-discovery"], nodelay),
                measure(workdir, sim.link, "MQTT on, broker nodelay, per value",
                        ["-b", nodelay.url, "--ha-discovery", "--mqtt-per-value"], nodelay)]
    finally:
        sim.stop()
        plain.stop()
        nodelay.stop()
    off, on, fast = runs[0], runs[1], runs[2]
    return {
        "bus": f"{BUS}, 9600 8N1 paced, {WINDOW:g} s per run",
        "delay read -> subscriber p50 (ms)": on["delay p50 ms"],
        "delay read -> subscriber p99 (ms)": on["delay p99 ms"],
        "delay p50 / p99 with broker nodelay (ms)": f"{fast['delay p50 ms']:.2f} / {fast['delay p99 ms']:.2f}",
        "CPU MQTT off (% of one core)": off["cpu % of one core"],
        "CPU MQTT on (% of one core)": on["cpu % of one core"],
        "runs": runs,
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
