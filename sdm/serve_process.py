"""The RTU slave in a helper process: its answer time never waits for the gateway's GIL.

An inverter polling a served unit expects the answer a few milliseconds
after the 3.5-character silence (the Share issue: 5 ms p99), whatever the
gateway's clients do (the Hostile clients issue).  In a thread of the gateway
the slave needs the interpreter's lock about six times per exchange (wake on
the request, read it, sleep out the silence, write); with the gevent loop
busy with hostile HTTP and websocket clients each of those waits can last a
switch interval or more.  Measured on a 2-core machine (bench/hostile.py):
3 ms p99 idle but 7 to 10 ms p99 under the hostile mix, the worst answer
45 ms.  A process of its own has its own interpreter and lock, so only the
operating system's scheduler stands between a request and its answer.

Parent side, :class:`RtuSlaveProcess` (a server of sdm/serve.py): starts
``python -m sdm.serve_process``, sends it the settings and what the cache
holds for its units, then every block the bus threads store for them (from
their threads, never blocking: when the pipe is full the block is dropped,
and the child refuses that register as stale rather than serve a wrong
one); carries the child's forwarded writes to the bus and back; mirrors its
counters for /status and /metrics; starts it again if it ends.

Child side, :func:`main`: the RtuSlave of sdm/serve.py on a cache of its own.

Messages both ways are pickled tuples behind a 4-byte length, each written
with one ``os.write`` (a pipe keeps writes of up to 4 KiB whole, so the bus
threads' blocks never interleave).  Parent to child: ``("setup", serve,
units, counters, verbose)`` once, ``("block", bus, id, fc, start, words,
at)``, ``("written", seq, code)``.  Child to parent: ``("stats", snapshot)``,
``("write", seq, bus, id, start, words, client)``.  Monotonic times are the
system's clock, the same in both processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from gevent import monkey

from .cache import CachedBlock, RegisterCache
from .config import MeterConfig, ServeConfig
from .forward import FORWARD_WAIT, GATEWAY_TARGET_FAILED, ForwardedWrite
from .slave import Forward, Responder, ServeStats
from .transport import Comset

log = logging.getLogger(__name__)

NativeLock = monkey.get_original("threading", "Lock")
NativeEvent = monkey.get_original("threading", "Event")
_start_thread = monkey.get_original("_thread", "start_new_thread")
_sleep = monkey.get_original("time", "sleep")
_waitpid = monkey.get_original("os", "waitpid")
_posix_spawn = monkey.get_original("os", "posix_spawn")   # gevent's would watch the child from a loop
# gevent's close defers the closing to its loop's next turn in a thread that has a hub (the
# gateway's main one, where stop() is called); the child must see its input end at once.
_close = monkey.get_original("os", "close")

HEADER = struct.Struct(">I")
STATS_INTERVAL = 0.2             # s between two counter reports of the child (when they changed)
RESTART_DELAY = 1.0              # s before a helper that ended is started again
MAX_RESTART_DELAY = 30.0         # ... doubling up to this while it keeps ending at once
STEADY_AFTER = 10.0              # s a helper must have run to count as having started well
REPLY_TRIES = 1000               # 1 ms apart: how long a forwarded write's outcome waits for room in the pipe


def encode(message: Tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def read_exact(fd: int, size: int) -> Optional[bytes]:
    """``size`` bytes from a blocking ``fd``; None at its end."""
    data = b""
    while len(data) < size:
        more = os.read(fd, size - len(data))
        if not more:
            return None
        data += more
    return data


def receive(fd: int) -> Optional[Tuple[Any, ...]]:
    """The next message on ``fd``; None when the other side closed it."""
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    body = read_exact(fd, HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


# --- the gateway's side ---------------------------------------------------------------------------

class RtuSlaveProcess:
    """A ``[[serve]]`` with a serial ``port``: the RTU slave in its helper process (see the module doc)."""

    def __init__(self, serve: ServeConfig, units: Mapping[int, MeterConfig], cache: RegisterCache,
                 forward: Optional[Forward], verbose: bool = False):
        self.serve = serve
        self.units = dict(units)
        self.cache = cache
        self.forward = forward
        self.verbose = verbose
        self.stats = ServeStats(serve.where)
        self.running = True
        self.pid: Optional[int] = None
        self._dropping = False                    # blocks being dropped (a full pipe): logged once
        self._served = {(meter.bus, meter.device_id) for meter in self.units.values()}
        self._to_child: Optional[int] = None
        self._pipe_lock = NativeLock()            # the bus threads' writes against a closing pipe

    def run(self) -> None:
        """Keep the helper running until :meth:`stop` (called in a thread of sdm/serve.py's Serving).
        A helper that keeps failing at once is started again ever more slowly (at most every
        MAX_RESTART_DELAY s), so a broken installation does not fill the log."""
        quick_ends = 0                            # helpers in a row that ended within STEADY_AFTER
        while self.running:
            began = time.monotonic()
            started = self._spawn()
            code = ""
            if started is not None:
                pid, from_child = started
                try:
                    self._talk(from_child)
                finally:
                    self._close_pipe()
                    _close(from_child)
                    code = self._reap(pid)
            quick_ends = quick_ends + 1 if time.monotonic() - began < STEADY_AFTER else 1
            delay = min(RESTART_DELAY * 2 ** (quick_ends - 1), MAX_RESTART_DELAY)
            if self.running and code:             # (a failed start has said why already)
                log.error("serve %s: helper process ended (%s); starting it again in %g s",
                          self.serve.where, code, delay)
            end = time.monotonic() + delay
            while self.running and time.monotonic() < end:
                _sleep(0.05)

    def stop(self) -> None:
        """Closing the child's input ends it within its poll tick, then :meth:`run` returns."""
        self.running = False
        self._close_pipe()

    def _spawn(self) -> Optional[Tuple[int, int]]:
        to_read, to_child = os.pipe()
        from_child, to_write = os.pipe()
        try:
            pid = _posix_spawn(sys.executable, [sys.executable, "-m", __name__], child_environment(),
                                 file_actions=[(os.POSIX_SPAWN_DUP2, to_read, 0), (os.POSIX_SPAWN_DUP2, to_write, 1)])
        except OSError as err:
            log.error("serve %s: cannot start the helper process: %s", self.serve.where, err)
            for fd in (to_read, to_child, from_child, to_write):
                _close(fd)
            return None
        _close(to_read)
        _close(to_write)
        self.pid = pid
        try:
            write_all(to_child, encode(("setup", self.serve, self.units, self.stats.snapshot(), self.verbose)))
            for (bus, device_id), block in self.cache.blocks():
                if (bus, device_id) in self._served:
                    write_all(to_child, encode(("block", bus, device_id, block.fc, block.start, block.words,
                                                block.at)))
        except OSError as err:        # it ended at once (BrokenPipeError)
            log.error("serve %s: the helper process did not take its settings: %s", self.serve.where, err)
            _close(to_child)
            _close(from_child)
            self._reap(pid)
            return None
        os.set_blocking(to_child, False)
        with self._pipe_lock:
            self._to_child = to_child
        self.cache.watch(self._stored)
        if not self.running:              # stopped while starting: end the child at once
            self._close_pipe()
        return pid, from_child

    def _stored(self, bus: str, device_id: int, block: CachedBlock) -> None:
        """Cache watcher, in a bus thread: pass the block on without ever blocking that thread."""
        if (bus, device_id) not in self._served:
            return
        data = encode(("block", bus, device_id, block.fc, block.start, block.words, block.at))
        with self._pipe_lock:
            if self._to_child is None:
                return
            try:
                os.write(self._to_child, data)          # under 1 KiB: a pipe takes it whole or not at all
                self._dropping = False
            except BlockingIOError:
                if not self._dropping:
                    log.warning("serve %s: the helper process is behind; its registers age until it "
                                "catches up", self.serve.where)
                self._dropping = True
            except OSError:
                pass                                    # the child is gone: run() notices and restarts it

    def _talk(self, from_child: int) -> None:
        while True:
            message = receive(from_child)
            if message is None:
                return
            if message[0] == "stats":
                self.stats.restore(message[1])
            elif message[0] == "write":
                self._forward(*message[1:])

    def _forward(self, seq: int, bus: str, device_id: int, start: int, words: list, client: str) -> None:
        meter = next((m for m in self.units.values() if (m.bus, m.device_id) == (bus, device_id)), None)
        code = GATEWAY_TARGET_FAILED
        if meter is not None and self.forward is not None:
            code = self.forward(meter, ForwardedWrite(meter.device_id, start, words, client))
        self._reply(encode(("written", seq, code)))

    def _reply(self, data: bytes) -> None:
        for _ in range(REPLY_TRIES):
            with self._pipe_lock:
                if self._to_child is None:
                    return
                try:
                    os.write(self._to_child, data)
                    return
                except BlockingIOError:
                    pass
                except OSError:
                    return
            _sleep(0.001)

    def _close_pipe(self) -> None:
        self.cache.unwatch(self._stored)
        with self._pipe_lock:
            fd, self._to_child = self._to_child, None
        if fd is not None:
            _close(fd)

    def _reap(self, pid: int) -> str:
        """Wait for the child (it ends within its tick once its input is closed); kill it if not."""
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                done, status = _waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return "exit status unknown"
            if done:
                return f"exit status {os.waitstatus_to_exitcode(status)}"
            _sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        _waitpid(pid, 0)
        return "killed after not ending"


def child_environment() -> Dict[str, str]:
    """The gateway's environment, with the folder holding this ``sdm`` package first on the path."""
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


# --- the helper's side ----------------------------------------------------------------------------

class Parent:
    """The helper's pipes to the gateway: blocks into its cache, writes forwarded and their outcomes."""

    def __init__(self, cache: RegisterCache, stats: ServeStats, inbox: int = 0, outbox: int = 1):
        self.cache = cache
        self.stats = stats
        self.inbox = inbox
        self.outbox = outbox
        self.on_close: Callable[[], None] = lambda: None
        self._send_lock = NativeLock()
        self._seq = 0
        self._waiting: Dict[int, Tuple[Any, list]] = {}     # seq -> (event, [code])

    def send(self, message: Tuple[Any, ...]) -> None:
        data = encode(message)
        with self._send_lock:
            write_all(self.outbox, data)

    def listen(self) -> None:
        """Until the gateway closes the pipe (it stopped, or died): then the slave stops too."""
        try:
            while True:
                message = receive(self.inbox)
                if message is None:
                    return
                if message[0] == "block":
                    bus, device_id, fc, start, words, at = message[1:]
                    self.cache.store(bus, device_id, fc, start, words, at)
                elif message[0] == "written":
                    waiting = self._waiting.get(message[1])
                    if waiting is not None:
                        waiting[1].append(message[2])
                        waiting[0].set()
        finally:
            self.on_close()

    def forward(self, meter: MeterConfig, write: ForwardedWrite) -> int:
        """A served client's write, carried by the gateway to the meter's bus (blocks, as in a thread)."""
        with self._send_lock:
            self._seq += 1
            seq = self._seq
        event = NativeEvent()
        outcome: List[int] = []
        self._waiting[seq] = (event, outcome)
        try:
            self.send(("write", seq, meter.bus, meter.device_id, write.start, write.words, write.client))
            if not event.wait(FORWARD_WAIT + 0.5):
                return GATEWAY_TARGET_FAILED
            return outcome[0]
        finally:
            del self._waiting[seq]

    def report(self, running: Callable[[], bool]) -> None:
        """The counters to the gateway whenever they changed, every STATS_INTERVAL s."""
        sent = -1
        while running():
            requests = self.stats.requests
            if requests != sent:
                try:
                    self.send(("stats", self.stats.snapshot()))
                except OSError:        # the gateway is gone: listen() sees the end and stops the slave
                    return
                sent = requests
            _sleep(STATS_INTERVAL)


REALTIME_PRIORITY = 1            # the lowest real-time priority: above every normal process, below the kernel's


def raise_priority(where: str) -> None:
    """Real-time scheduling for the helper where the system allows it (root, CAP_SYS_NICE, or
    ``LimitRTPRIO=1`` in the systemd unit): woken by a request or at the end of the silence, it
    then runs at once instead of waiting for a busy core's turn.  It sleeps almost always, so it
    takes nothing from the rest; where it is not allowed the helper runs as a normal process."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except (OSError, AttributeError) as err:
        log.info("serve %s: normal scheduling (real-time priority not allowed: %s)", where, err)
        return
    log.info("serve %s: real-time scheduling, priority %d", where, REALTIME_PRIORITY)


def main() -> int:
    """``python -m sdm.serve_process``: started by RtuSlaveProcess, never by hand."""
    from .serve import RtuSlave
    from .transport.serial import SerialTransport
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the gateway, which ends us
    setup = receive(0)
    if setup is None or setup[0] != "setup":
        return 2
    _, serve, units, counters, verbose = setup
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_priority(serve.where)
    cache = RegisterCache()
    stats = ServeStats(serve.where)
    stats.restore(counters)
    parent = Parent(cache, stats)
    responder = Responder(units, cache, serve.max_age, serve.writes, stats, parent.forward)
    slave = RtuSlave(SerialTransport(serve.port, Comset(serve.baud, serve.parity)), responder)
    parent.on_close = slave.stop
    _start_thread(parent.listen, ())
    _start_thread(parent.report, (lambda: slave.running,))
    slave.run()
    with contextlib.suppress(OSError):                # the gateway may be gone already
        parent.send(("stats", stats.snapshot()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
