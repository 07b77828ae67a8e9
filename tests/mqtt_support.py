"""A real MQTT broker for the tests (Debian's mosquitto on a free loopback port) and a real subscriber."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple

import paho.mqtt.client as paho

from tests.support import Process, free_port, wait_until

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def find_mosquitto() -> Optional[str]:
    return shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def require_mosquitto() -> str:
    """The mosquitto binary; `make test` (.ci/prepare) installs it, the tests never do."""
    found = find_mosquitto()
    if not found:
        raise RuntimeError("mosquitto not found: run `make prepare` (.ci/prepare) before the MQTT tests")
    return found


class Broker(Process):
    """mosquitto with a config of our own: loopback only, anonymous, nothing kept on disk."""

    def __init__(self, binary: str, workdir: Path, tls: Optional[Tuple[Path, Path]] = None, extra_config: str = ""):
        """``tls``: (certificate, key) files for a second, TLS listener on ``tls_port``."""
        self.port = free_port()
        self.host = "127.0.0.1"
        self.tls_port = free_port() if tls else None
        conf = Path(workdir) / f"mosquitto-{self.port}.conf"
        # "user": stay who we are (as root it would switch to "mosquitto", who cannot read our tmp files)
        anonymous = "false" if "password_file" in extra_config else "true"
        text = (f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
                f"listener {self.port} {self.host}\nallow_anonymous {anonymous}\npersistence false\n"
                f"log_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\n")
        if tls:
            text += f"listener {self.tls_port} {self.host}\ncertfile {tls[0]}\nkeyfile {tls[1]}\n"
        conf.write_text(text + extra_config)
        super().__init__([binary, "-c", str(conf)], Path(workdir) / f"mosquitto-{self.port}.log")

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> Broker:
        self.spawn()
        wait_until(self._listening, 10, what=f"mosquitto on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float          # time.time() on arrival

    def text(self) -> str:
        return self.payload.decode()


class Subscriber:
    """A paho client that records every message on its subscriptions."""

    def __init__(self, port: int, topics: Iterable[str] = ("#",), host: str = "127.0.0.1",
                 login: Optional[Tuple[str, str]] = None):
        self.messages: List[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        if login:
            self.client.username_pw_set(*login)
        self.client.connect(host, port)
        self.client.subscribe([(topic, 0) for topic in topics])
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("the test subscriber got no SUBACK")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain), time.time()))

    def on(self, topic: str) -> List[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Optional[Received]:
        found = self.on(topic)
        return found[-1] if found else None

    def wait_for(self, topic: str, predicate: Callable[[Received], bool] = lambda m: True,
                 timeout: float = 15.0, after: int = 0) -> Received:
        """The first message on ``topic`` (from index ``after`` of that topic's list) that satisfies predicate."""
        def found():
            return next((m for m in self.on(topic)[after:] if predicate(m)), None)
        return wait_until(found, timeout, what=f"a message on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
