"""sdm630_logger end to end: recording a real gateway, gateway restarts, kill -9, bad input."""

import re
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Tuple

import gevent
import pytest
from gevent import pywsgi

from sdm.store import Reader
from tests.support import ROOT, Process, free_port, python_cmd, wait_until

BUS = "sdm630:1,janitza:26"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
Key = Tuple[int, str, int]          # device, measurement, read time in ms


def ms(iso: str) -> int:
    return (datetime.fromisoformat(iso) - EPOCH) // timedelta(milliseconds=1)


class Recorder(Process):
    def __init__(self, url: str, db, log_path, *extra: str):
        super().__init__(python_cmd("sdm.cli.logger", "record", "-u", url, "-f", str(db), *extra), log_path)

    def start(self) -> "Recorder":
        self.spawn()
        wait_until(lambda: "following" in self.log() or self.proc.poll() is not None, 15, what="recorder start")
        assert self.proc.poll() is None, self.log()
        return self

    def totals(self) -> List[int]:
        """The file's value count after each store, as the recorder logged it."""
        return [int(n) for n in re.findall(r"stored \d+ values \((\d+) in ", self.log())]

    def finish(self, signum: int = signal.SIGTERM) -> int:
        self.signal(signum)
        code = self.proc.wait(10)
        self._log.close()
        return code


def logger(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(python_cmd("sdm.cli.logger", *args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def replay(gw) -> List[dict]:
    """Every meter event the gateway's firehose buffer holds."""
    return gw.get("/firehose?category=meterupdate&timeout=1&since_time=0").json()["events"]


def reported(events: List[dict]) -> Dict[Key, float]:
    return {(e["data"]["DeviceId"], e["data"]["IEC61850"], ms(e["data"]["ReadTimestamp"])): e["data"]["Value"]
            for e in events}


def exported(db) -> Dict[Key, float]:
    """The file as `export -t -` writes it, back to (device, name, ms) -> value."""
    result = logger("export", "-f", str(db), "-t", "-")
    assert result.returncode == 0, result.stderr
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header[:2] == ["DeviceId", "Time"]
    values = {}
    for row in rows:
        for name, cell in zip(header[2:], row[2:]):
            if cell:
                values[(int(row[0]), name, ms(row[1]))] = float(cell)
    return values


def within(values: Dict[Key, float], first: int, last: int) -> Dict[Key, float]:
    return {key: value for key, value in values.items() if first < key[2] < last}


def last_read(db) -> int:
    return Reader(str(db)).summary().last or 0


@pytest.fixture
def bus(simulator, gateway):
    sim = simulator(BUS)
    return gateway(sim.link, BUS)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_recorded_values_are_exactly_what_the_gateway_reported(bus, tmp_path, signum):
    db = tmp_path / "log.db"
    rec = Recorder(f"127.0.0.1:{bus.port}", db, tmp_path / "rec.log", "-s", "60").start()
    published_before = len(replay(bus))
    wait_until(lambda: len(replay(bus)) > published_before + 1000, 20, what="a few seconds of values")
    assert rec.totals() == []                      # nothing stored yet: the interval is a minute
    assert rec.finish(signum) == 0, rec.log()
    stored = exported(db)
    assert len(stored) == rec.totals()[-1] > 500   # everything held was stored on the signal
    gateway_said = reported(replay(bus))
    assert {key: gateway_said.get(key) for key in stored} == stored
    first, last = min(k[2] for k in stored), max(k[2] for k in stored)
    assert within(gateway_said, first, last) == within(stored, first, last)   # no gap
    assert {k[0] for k in stored} == {1, 26} and len({k[1] for k in stored if k[0] == 1}) == 52
    inspect = logger("inspect", "-f", str(db))
    assert inspect.returncode == 0
    lines = inspect.stdout.splitlines()
    assert lines[0] == f"{db}: {len(stored)} values from 2 device(s)"
    assert ms(lines[1].split(": ", 1)[1]) == first and ms(lines[2].split(":  ", 1)[1]) == last
    assert lines[3].startswith(f"Device 1: {sum(1 for k in stored if k[0] == 1)} values, ")
    assert lines[4].startswith(f"Device 26: {sum(1 for k in stored if k[0] == 26)} values, ")
    assert "Traceback" not in rec.log()


def test_a_gateway_restart_loses_nothing_its_buffer_still_held(bus, tmp_path):
    db = tmp_path / "log.db"
    rec = Recorder(f"127.0.0.1:{bus.port}", db, tmp_path / "rec.log", "-s", "0.5").start()
    wait_until(lambda: rec.totals(), 10, what="a first store")
    before = replay(bus)
    wait_until(lambda: last_read(db) >= max(ms(e["data"]["ReadTimestamp"]) for e in before), 10,
               what="the recorder catching up")
    bus.stop()
    wait_until(lambda: "retrying until it answers" in rec.log(), 10, what="the recorder noticing")
    rec.signal(signal.SIGSTOP)                     # the new gateway publishes while the recorder sleeps
    bus.start()
    rec.signal(signal.SIGCONT)
    wait_until(lambda: "answers again" in rec.log(), 15, what="the recorder reconnecting")
    after = replay(bus)
    wait_until(lambda: last_read(db) >= max(ms(e["data"]["ReadTimestamp"]) for e in after), 10,
               what="the recorder catching up again")
    assert rec.finish() == 0, rec.log()
    stored = exported(db)
    old, new = reported(before), reported(after)
    first = min(k[2] for k in stored)
    assert within(old, first, max(k[2] for k in old)).items() <= stored.items()
    assert min(k[2] for k in new) < ms_of_log_line(rec.log(), "answers again")   # published while away
    assert new.items() <= stored.items()           # the whole buffer of the restarted gateway


def ms_of_log_line(log: str, text: str) -> int:
    line = next(line for line in log.splitlines() if text in line)
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()
    return (stamp - EPOCH) // timedelta(milliseconds=1)


def test_kill_9_keeps_everything_up_to_the_last_store(bus, tmp_path):
    db = tmp_path / "log.db"
    rec = Recorder(f"127.0.0.1:{bus.port}", db, tmp_path / "rec.log", "-s", "0.3").start()
    wait_until(lambda: len(rec.totals()) >= 3, 15, what="three stores")
    rec.signal(signal.SIGKILL)
    rec.proc.wait(5)
    stored_then = rec.totals()[-1]
    reader = Reader(str(db))
    assert reader.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert reader.summary().count >= stored_then
    assert logger("inspect", "-f", str(db)).returncode == 0
    again = Recorder(f"127.0.0.1:{bus.port}", db, tmp_path / "rec2.log", "-s", "0.3").start()   # lock released
    wait_until(lambda: again.totals(), 10, what="a store by the second recorder")
    assert again.finish() == 0
    assert Reader(str(db)).summary().count > stored_then


def test_a_second_recorder_on_the_same_file_is_refused(bus, tmp_path):
    db = tmp_path / "log.db"
    first = Recorder(f"127.0.0.1:{bus.port}", db, tmp_path / "rec.log", "-s", "0.5").start()
    second = logger("record", "-u", f"127.0.0.1:{bus.port}", "-f", str(db))
    assert second.returncode == 2
    assert f"sdm630_logger: {db} is in use by another recorder" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.proc.poll() is None
    assert first.finish() == 0


@pytest.mark.parametrize("url, category, message", [
    (None, "meterupdate", "cannot follow the gateway: http://127.0.0.1:{port}/firehose: Connection refused"),
    ("gateway", "bogus", "cannot follow the gateway: http://127.0.0.1:{port}/firehose: the gateway says: "),
    ("gateway/nothing", "meterupdate", "cannot follow the gateway: http://127.0.0.1:{port}/nothing/firehose"),
])
def test_a_gateway_that_cannot_be_followed_is_an_error_at_start(bus, tmp_path, url, category, message):
    port = bus.port if url else free_port()
    target = f"127.0.0.1:{port}" + (url[len("gateway"):] if url else "")
    result = logger("record", "-u", target, "-c", category, "-f", str(tmp_path / "log.db"))
    assert result.returncode == 2
    assert message.format(port=port) in result.stderr
    assert "Traceback" not in result.stderr


class ScriptedFirehose:
    """A web server that answers the recorder with a script of good and bad replies, then timeouts."""

    def __init__(self, script):
        self.script = list(script)
        self.queries: List[str] = []
        self.server = pywsgi.WSGIServer(("127.0.0.1", 0), self.app, log=None)
        self.server.start()

    def app(self, environ, start_response):
        self.queries.append(environ.get("QUERY_STRING", ""))
        if self.script:
            status, body = self.script.pop(0)
        else:
            gevent.sleep(0.2)    # a short long poll
            status, body = "200 OK", b'{"timeout":"no events before timeout","timestamp":1}'
        start_response(status, [("Content-Type", "application/json")])
        return [body]


def event(stamp: int, device: int, name: str, value) -> bytes:
    return (b'{"timestamp":%d,"category":"meterupdate","data":{"DeviceId":%d,"Value":%s,"IEC61850":"%s",'
            b'"ReadTimestamp":"2024-05-01T10:00:00.%03d+00:00"}}' % (stamp, device, value, name.encode(), stamp % 1000))


def test_timeouts_and_bad_bodies_never_stop_the_recorder(tmp_path):
    good = ("200 OK", b'{"events":[' + event(1714557600101, 1, "VolLocPhsA", b"230.5") + b"]}")
    fake = ScriptedFirehose([
        good,
        ("200 OK", b'{"timeout":"no events before timeout","timestamp":1714557600150}'),
        ("200 OK", b"<html><body>proxy error</body></html>"),
        ("500 Internal Server Error", b"oops"),
        ("400 Bad Request", b'{"error": "Invalid last_event_time arg."}'),
        ("200 OK", b'{"events":"no"}'),
        ("200 OK", b'{"events":[{"timestamp":1714557600200,"category":"statusupdate","data":{"Uptime":3}},'
                   b'{"timestamp":1714557600201},' + event(1714557600202, 1, "VolLocPhsA", b"null") + b","
                   + event(1714557600203, 1, "Freq", b"49.98") + b"]}"),
    ])
    try:
        db = tmp_path / "log.db"
        rec = Recorder(f"127.0.0.1:{fake.server.server_port}", db, tmp_path / "rec.log", "-s", "0.2").start()
        wait_until(lambda: len(fake.queries) >= 9, 20, what="the script to be played")
        assert rec.proc.poll() is None
        assert rec.finish() == 0, rec.log()
    finally:
        fake.server.stop()
    assert exported(db) == {(1, "VolLocPhsA", ms("2024-05-01T10:00:00.101+00:00")): 230.5,
                            (1, "Freq", ms("2024-05-01T10:00:00.203+00:00")): 49.98}
    assert "since_time" not in fake.queries[0]
    assert [q for q in fake.queries if "since_time=1714557600101" in q][:5] == fake.queries[1:6]
    assert "since_time=1714557600203" in fake.queries[-1]
    log = rec.log()
    assert "not a JSON object; retrying until it answers" in log and "answers again" in log
    assert "3 events so far were no meter values" in log
    assert "Traceback" not in log
