"""Buses in threads of their own: a bus's timing never waits for a client.

Every bus's poller runs in a native thread with plain blocking I/O, so the
moment it reads a reply or sends the next request does not depend on what
the HTTP, websocket, MQTT or Prometheus side is doing on the gevent loop:
a busy loop can delay when a reading is *served*, never when it is *read*.
Python's GIL is the one thing the threads share; the gateway shortens the
interpreter's switch interval so that a bus thread waiting for it gets it
within about a millisecond (see :data:`SWITCH_INTERVAL`).

A bus thread reports through a :class:`LoopSink`: its calls are queued and
replayed on the loop's thread, in order, where the hub and every output live,
so the hub needs no locks.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Sequence, Tuple, Union

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.threadpool import ThreadPool

from .cache import RegisterCache
from .config import AUTO, LISTEN, BusConfig, MeterConfig
from .forward import FORWARD_WAIT, GATEWAY_TARGET_FAILED, ForwardedWrite
from .framing import make_link
from .framing.rtu import RtuLink
from .hub import BusState, Hub
from .listen import AutoBus, Listener
from .poller import Poller, PollSettings
from .timing import TimingFile
from .transport import Comset
from .transport.serial import SerialTransport

log = logging.getLogger(__name__)

# The interpreter asks a thread holding the GIL to let go after this long (CPython's default: 5 ms).
# A bus thread needs the GIL a few times per exchange; with 1 ms a loop busy with clients costs a
# bus at most a few ms per request instead of tens.
SWITCH_INTERVAL = 0.001

# Blocking calls for the bus threads, whatever gevent has patched in this process.
blocking_sleep: Callable[[float], None] = monkey.get_original("time", "sleep")


class LoopSink:
    """The hub's writing side for a poller in another thread: calls are queued and replayed on
    the loop's thread, in the order they were made.  Must be created on the loop's thread."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self._calls: Deque[Tuple[Callable[..., None], Tuple[Any, ...]]] = deque()
        self._wake = Event()
        self._signal = gevent.get_hub().loop.async_()   # send() may be called from any thread
        self._signal.start(self._wake.set)
        self._replayer = gevent.spawn(self._replay)

    def publish(self, name: str, values: Mapping[str, Optional[float]],
                timestamp: Optional[float] = None, complete: bool = False) -> None:
        self._post(self.hub.publish, name, values, timestamp, complete)

    def count(self, name: str, error_kind: Optional[str] = None) -> None:
        self._post(self.hub.count, name, error_kind)

    def set_status(self, name: str, status: str) -> None:
        self._post(self.hub.set_status, name, status)

    def drop(self, name: str, names: Sequence[str]) -> None:
        self._post(self.hub.drop, name, tuple(names))

    def timing(self, name: str, figures: Mapping[str, object]) -> None:
        self._post(self.hub.timing, name, figures)

    def bus_state(self, bus: str, connected: bool, reopened: bool = False,
                  hint: Optional[str] = None, listen: Optional[Mapping[str, object]] = None) -> None:
        self._post(self.hub.bus_state, bus, connected, reopened, hint, listen)

    def _post(self, call: Callable[..., None], *args: Any) -> None:
        self._calls.append((call, args))    # deque.append is atomic: no lock needed
        self._signal.send()

    def _replay(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.drain()

    def drain(self) -> None:
        """Apply every queued call (also used at shutdown, after the threads ended)."""
        while self._calls:
            call, args = self._calls.popleft()
            try:
                call(*args)
            except Exception:   # a bad call must not stop the replay of the others
                log.exception("applying %s from a bus thread failed", getattr(call, "__name__", call))

    def close(self) -> None:
        self._replayer.kill()
        self._signal.stop()
        self._signal.close()


def settings_of(bus: BusConfig) -> PollSettings:
    return PollSettings(timeout=bus.timeout, retries=bus.retries, max_failures=bus.max_failures,
                        reprobe_max=bus.reprobe_max)


def bus_state_of(bus: BusConfig) -> BusState:
    return BusState(bus.name, port=bus.port, transport=bus.kind, line=str(Comset(bus.baud, bus.parity)),
                    mode=bus.mode)


Runner = Union[Poller, Listener, AutoBus]


class BusThreads:
    """One native thread per bus, each running that bus's poller (or listener); buses can be
    added and removed while the others run (a configuration reloaded on SIGHUP)."""

    def __init__(self, hub: Hub, buses: Sequence[BusConfig], timing_file: Optional[TimingFile] = None,
                 cache: Optional[RegisterCache] = None):
        self.sink = LoopSink(hub)
        self.timing_file = timing_file
        self.cache = cache
        self.runners: Dict[str, Runner] = {bus.name: self._runner(bus) for bus in buses}
        self._pool = ThreadPool(max(1, len(self.runners)))
        self._runs: Dict[str, Any] = {}

    @property
    def pollers(self) -> Dict[str, Poller]:
        """The buses whose poller may transmit (not a listen-only one)."""
        found = {}
        for name, runner in self.runners.items():
            poller = runner.poller if isinstance(runner, AutoBus) else runner
            if isinstance(poller, Poller):
                found[name] = poller
        return found

    def _runner(self, bus: BusConfig) -> Runner:
        """What runs in a bus's thread: its poller, a listener (listen), or both taking turns (auto)."""
        if bus.mode not in (LISTEN, AUTO):
            return Poller(self.sink, make_link(bus.port, bus.baud, bus.parity), bus.meters, settings_of(bus),
                          sleep=blocking_sleep, bus=bus.name, timing_file=self.timing_file, cache=self.cache)
        transport = SerialTransport(bus.port, Comset(bus.baud, bus.parity))
        listener = Listener(self.sink, transport, bus.meters, bus.name, self.cache, bus.mode, sleep=blocking_sleep)
        if bus.mode == LISTEN:
            return listener
        poller = Poller(self.sink, RtuLink(transport), bus.meters, settings_of(bus), sleep=blocking_sleep,
                        bus=bus.name, timing_file=self.timing_file, cache=self.cache)
        return AutoBus(listener, poller, bus.takeover_after)

    def start(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL)
        for name, runner in self.runners.items():
            self._runs[name] = self._pool.spawn(runner.run)

    def start_bus(self, bus: BusConfig) -> None:
        """Poll one more bus, in a thread of its own (its name must be new)."""
        if bus.name in self.runners:
            raise ValueError(f"bus {bus.name} is already polled")
        self.runners[bus.name] = self._runner(bus)
        self._pool.maxsize = max(self._pool.maxsize, len(self.runners))
        self._runs[bus.name] = self._pool.spawn(self.runners[bus.name].run)

    def stop_bus(self, name: str, timeout: float = 2.0) -> None:
        """Stop polling one bus and wait for its thread (it closes its port); what it reported
        until then is applied to the hub before this returns."""
        runner = self.runners.pop(name)
        runner.stop()
        run = self._runs.pop(name, None)
        if run is not None:
            run.wait(timeout)
        self.sink.drain()

    def forward(self, meter: MeterConfig, write: ForwardedWrite, wait: float = FORWARD_WAIT) -> int:
        """Hand a served client's write to the poller of the meter's bus and wait for its outcome
        (called from a Modbus server thread)."""
        poller = self.pollers.get(meter.bus)
        if poller is None:
            return GATEWAY_TARGET_FAILED
        poller.writes.append(write)
        return write.wait(wait)

    def stop(self, timeout: float = 2.0) -> None:
        """Ask every bus thread to stop and wait (each notices within about half a second)."""
        for runner in self.runners.values():
            runner.stop()
        end = time.monotonic() + timeout
        for run in self._runs.values():
            run.wait(max(0.0, end - time.monotonic()))
        self.sink.drain()
        self.sink.close()
        self._pool.kill()
