"""Real processes for end-to-end tests: the simulator on a pty, the gateway on loopback."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from sdm.readings import LAYOUT
from simulator.faults import GATEWAY_KIND, OK

ROOT = Path(__file__).resolve().parent.parent

# docs/api.md, the Readings object: the keys of gosdm630's Readings object, in its order
GOSDM_KEYS = ["UniqueId", "Timestamp", "Unix", "ModbusDeviceId", "Power", "Voltage", "Current", "Cosphi",
              "Import", "TotalImport", "Export", "TotalExport", "THD", "Frequency"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Response:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(port: int, path: str, method: str = "GET", headers: Optional[Dict[str, str]] = None,
                 body: Optional[bytes] = None, timeout: float = 10.0) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def python_cmd(module: str, *args: str) -> List[str]:
    return [sys.executable, "-m", module, *args]


class Process:
    """A child process whose output goes to a log file we can show on failure."""

    def __init__(self, cmd: List[str], log_path: Path, env: Optional[Dict[str, str]] = None):
        self.cmd = cmd
        self.log_path = Path(log_path)
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.preexec: Optional[Callable[[], None]] = None   # run in the child before it starts (limits)

    def spawn(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
                                     preexec_fn=self.preexec)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, signum: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Simulator(Process):
    def __init__(self, link: Path, devices: str, extra: List[str]):
        self.link = Path(link)
        self.devices = devices
        super().__init__(python_cmd("simulator", "--link", str(link), "-d", devices, "--seed", "7", *extra),
                         Path(f"{link}.log"))

    def start(self) -> Simulator:
        self.spawn()
        wait_until(lambda: os.path.exists(self.link) or self.proc.poll() is not None, 10, what="simulator link")
        assert self.proc.poll() is None, self.log()
        return self


def own_state(directory: Path) -> Dict[str, str]:
    """The environment of a gateway with a state directory of its own (as systemd's StateDirectory=
    gives), so that tests never share counter state with each other or with the user's."""
    return {**os.environ, "STATE_DIRECTORY": str(directory)}


class Gateway(Process):
    def __init__(self, link: str, devices: str, extra: List[str], log_path: Path):
        self.port = free_port()
        self.devices = devices
        super().__init__(python_cmd("sdm.cli.httpd", "-s", link, "-d", devices,
                                    "-u", f"127.0.0.1:{self.port}", *extra), log_path,
                         own_state(Path(log_path).parent / f"state-{self.port}"))

    @classmethod
    def from_file(cls, config_text: str, path: Path, *extra: str) -> Gateway:
        """A gateway started with ``--config``; ``{http}`` in the text becomes an [http] section
        listening on a free loopback port."""
        gateway = cls.__new__(cls)
        gateway.port = free_port()
        gateway.devices = ""
        path.write_text(config_text.replace("{http}", f'[http]\nlisten = "127.0.0.1:{gateway.port}"\n'))
        Process.__init__(gateway, python_cmd("sdm.cli.httpd", "--config", str(path), *extra),
                         path.with_suffix(".log"), own_state(path.parent / f"state-{gateway.port}"))
        return gateway

    def get(self, path: str, **kwargs) -> Response:
        return http_request(self.port, path, **kwargs)

    def start(self, wait_values: bool = True) -> Gateway:
        self.spawn()
        wait_until(self._answers, 15, what=f"gateway on port {self.port}")
        if wait_values:
            wait_until(self._all_read, 15, what="a first reading of every meter")
        return self

    def kill(self) -> None:
        """End at once (SIGKILL), as a crash or a pulled plug would."""
        self.proc.kill()
        self.proc.wait()

    def restart(self, wait_values: bool = True) -> Gateway:
        """Start again on the same port after :meth:`kill` or :meth:`stop`."""
        self.stop()
        return self.start(wait_values)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.get("/status", timeout=1).status == 200
        except OSError:
            return False

    def _all_read(self) -> bool:
        meters = self.get("/status").json()["ConfiguredMeters"]
        return all(m["CompleteReadings"] > 0 for m in meters)


def reading_values(reading: Dict[str, Any]) -> Dict[str, Any]:
    """A Readings JSON object back to {measurement: value} for the values it has (not null)."""
    values: Dict[str, Any] = {}

    def walk(spec, obj):
        if isinstance(spec, str):
            if obj is not None:
                values[spec] = obj
        else:
            for key, inner in spec.items():
                walk(inner, obj[key])

    for key, spec in LAYOUT:
        walk(spec, reading[key])
    return values


class ServedValues:
    """The clean replies of a simulator's served log (simulator/faults.py), to check published values."""

    def __init__(self, records: List[Dict[str, Any]]):
        self._replies: Dict[tuple, List[Dict[str, Any]]] = {}
        for record in records:
            if record.get("outcome") == OK:
                for item in record.get("values", {}).items():
                    self._replies.setdefault((record["slave"], *item), []).append(record["values"])

    def served(self, slave: int, values: Dict[str, Any]) -> bool:
        """True when one clean reply to ``slave`` carried every one of ``values``."""
        if not values:
            return True
        candidates = self._replies.get((slave, *next(iter(values.items()))), [])
        return any(all(name in reply and reply[name] == value for name, value in values.items())
                   for reply in candidates)


def expected_errors(records: List[Dict[str, Any]], slave: Optional[int] = None) -> Dict[str, int]:
    """The gateway error counts, by kind, that a served log's outcomes stand for."""
    counts: Dict[str, int] = {}
    for record in records:
        kind = GATEWAY_KIND.get(record.get("outcome"))
        if kind and (slave is None or record["slave"] == slave):
            counts[kind] = counts.get(kind, 0) + 1
    return counts
