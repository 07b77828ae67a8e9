"""In-process stand-ins: a bus line wired straight to virtual meters (no pty, no timing)."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from sdm.config import MeterConfig
from sdm.framing.rtu import RtuLink
from sdm.hub import Hub
from sdm.meters.registry import lookup
from sdm.poller import Poller, PollSettings
from simulator.meters import VirtualMeter
from simulator.physics import Physics
from simulator.server import answer


class FrozenClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def virtual_meters(devices: Dict[int, str], clock=None, seed: int = 3) -> Dict[int, VirtualMeter]:
    """Virtual meters whose values only change when ``clock`` moves."""
    clock = clock or FrozenClock()
    meters = {}
    for slave, type_name in devices.items():
        model = lookup(type_name)
        meters[slave] = VirtualMeter(model, slave, Physics(model.phases, seed=seed + slave, clock=clock))
    return meters


class MeterLine:
    """A transport whose replies come from virtual meters; ``mangle`` may change or drop them."""

    char_time = 10 / 9600
    path = port = "fake"
    kind = "serial"

    def __init__(self, meters: Dict[int, VirtualMeter],
                 mangle: Optional[Callable[[bytes, Optional[bytes]], Optional[bytes]]] = None,
                 baud: Optional[int] = None):
        self.meters = meters
        self.mangle = mangle
        self.baud = baud      # the rate requests are sent at: a meter set to another one does not hear them
        self.pending = b""
        self.is_open = False
        self.requests = []

    def open(self):
        self.is_open = True

    def close(self):
        self.is_open = False

    def clear_input(self):
        self.pending = b""

    def write(self, data: bytes):
        self.requests.append(bytes(data))
        reply = answer(self.meters, bytes(data), self.baud)
        if self.mangle:
            reply = self.mangle(bytes(data), reply)
        self.pending = reply or b""

    def read(self, size: int, deadline: float) -> bytes:
        chunk, self.pending = self.pending[:size], self.pending[size:]
        return chunk

    def settle(self, quiet: float, limit: float) -> None:
        self.pending = b""


def meter_configs(devices: Dict[int, str]) -> List[MeterConfig]:
    """One bus's meters, named M<id>."""
    return [MeterConfig(slave, name.upper(), lookup(name), f"M{slave}") for slave, name in devices.items()]


def bus_poller(devices: Dict[int, str], line, settings: Optional[PollSettings] = None, **kwargs) -> Tuple[Hub, Poller]:
    """A hub and a poller of ``devices`` on ``line``, reporting straight to the hub (one thread)."""
    configs = meter_configs(devices)
    hub = Hub(configs)
    return hub, Poller(hub, RtuLink(line), configs, settings, **kwargs)
