"""Energy counters end to end: glitching virtual meters, a real gateway, a real mosquitto, the logger.

For each glitch of the simulator's --energy-* options, every output is watched while it happens:
/last, /minuteavg, /metrics (polled), /ws in both formats, /firehose (its buffer), MQTT state and
per-value topics (what Home Assistant's sensors read) and a sdm630_logger recording.  None may ever
show the false value; a real reset is shown once, after its confirmation; a gateway killed and
started again never shows less than before.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import gevent
import pytest
import websocket
from prometheus_client.parser import text_string_to_metric_families

from sdm.meters.registry import lookup
from sdm.readings import value_paths
from sdm.sanity import COUNTERS
from tests.e2e.test_logger import Recorder, exported
from tests.support import wait_until

MODEL = lookup("sdm630")
METER_COUNTERS = sorted(COUNTERS & set(MODEL.names))
PATHS = value_paths()
KWH_JOULES = 3.6e6
METRICS = {"sdm_import_energy_joules": "TotkWhImport", "sdm_export_energy_joules": "TotkWhExport",
           "sdm_phase_import_energy_joules": "TotkWhImportPhs", "sdm_phase_export_energy_joules": "TotkWhExportPhs"}
GLITCH_AT = 4.0          # seconds after the simulator's start: the gateway must have a value before it
SMALL_CONFIRM = ("--counter-confirm", "3", "--counter-confirm-seconds", "1")

Seen = Dict[Tuple[str, str], List[Optional[float]]]      # (output, counter) -> values in the order shown


def dig(reading: dict, path: Tuple[str, ...]) -> Optional[float]:
    for key in path:
        reading = reading[key]
    return reading


class Watch:
    """Every counter value each output of one gateway shows, until :meth:`finish`."""

    unfinished: List[Watch] = []      # stopped after their test even when it failed before finish()

    def __init__(self, gw, subscriber, tmp_path: Path, name: str = "watch"):
        self.gw = gw
        self.sub = subscriber
        self.since = time.time()          # MQTT messages from before are another watch's
        self.seen: Seen = defaultdict(list)
        self.recorder = Recorder(f"127.0.0.1:{gw.port}", tmp_path / f"{name}.db", tmp_path / f"{name}-rec.log",
                                 "-s", "60", "-t", "1").start()
        self.db = tmp_path / f"{name}.db"
        self._sockets: List[websocket.WebSocket] = []
        self._workers = [gevent.spawn(self._poll), gevent.spawn(self._ws, ""),
                         gevent.spawn(self._ws, "?format=readings")]
        Watch.unfinished.append(self)

    def stop(self) -> None:
        Watch.unfinished.remove(self)
        gevent.killall(self._workers)
        for ws in self._sockets:
            ws.close()

    def reading(self, output: str, reading: dict) -> None:
        for name in METER_COUNTERS:
            self.seen[(output, name)].append(dig(reading, PATHS[name]))

    def _poll(self) -> None:
        while True:
            for route in ("/last/1", "/minuteavg/1"):
                answer = self.gw.get(route)
                if answer.status == 200:
                    self.reading(route, answer.json())
            answer = self.gw.get("/metrics")
            if answer.status == 200:
                self._metrics(answer.body.decode())
            gevent.sleep(0.05)

    def _metrics(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                base = METRICS.get(sample.name.removesuffix("_total"))
                if base and sample.labels.get("meter") == "Instrument1":
                    phase = sample.labels.get("phase")
                    name = base + "ABC"[int(phase[1]) - 1] if phase else base
                    self.seen[("/metrics", name)].append(sample.value / KWH_JOULES)

    def _ws(self, query: str) -> None:
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.gw.port}/ws{query}", timeout=10)
        self._sockets.append(ws)
        output = "/ws" + query
        while True:
            frame = json.loads(ws.recv())
            if "Modbus" in frame:
                continue
            if query:
                self.reading(output, frame)
            elif frame["IEC61850"] in COUNTERS:
                self.seen[(output, frame["IEC61850"])].append(frame["Value"])

    def finish(self) -> Seen:
        """Stop watching; add what the firehose buffer, MQTT and the logger's file hold."""
        self.stop()
        for event in self._firehose():
            if event["data"]["IEC61850"] in COUNTERS:
                self.seen[("/firehose", event["data"]["IEC61850"])].append(event["data"]["Value"])
        for message in self._messages("sdm630/Instrument1/state"):
            self.reading("mqtt state", json.loads(message.payload))
        for name in METER_COUNTERS:
            for message in self._messages(f"sdm630/Instrument1/{name}"):
                self.seen[("mqtt value", name)].append(float(message.payload))
        assert self.recorder.finish() == 0, self.recorder.log()
        for (device, name, _), value in sorted(exported(self.db).items(), key=lambda item: item[0][2]):
            if device == 1 and name in COUNTERS:
                self.seen[("logger", name)].append(value)
        return self.seen

    def _firehose(self) -> List[dict]:
        """Every buffered meter event, oldest first: a reply holds a bounded number, so page on."""
        events: List[dict] = []
        since, until = 0, time.time() * 1000      # stamps are milliseconds
        while since < until:
            page = self.gw.get(f"/firehose?category=meterupdate&timeout=1&since_time={since}").json()
            if "events" not in page:               # a timeout: nothing newer
                break
            events += page["events"]
            since = page["events"][-1]["timestamp"]
        return events

    def _messages(self, topic: str) -> list:
        return [message for message in self.sub.on(topic) if message.at >= self.since]


OUTPUTS = {"/last/1", "/minuteavg/1", "/metrics", "/ws", "/ws?format=readings", "/firehose", "mqtt state",
           "mqtt value", "logger"}


def shown(values: List[Optional[float]]) -> List[float]:
    return [value for value in values if value is not None]


def assert_only_true_counts(seen: Seen) -> None:
    """On every output: counters only rise, never null again once shown, never 0, NaN or x1000."""
    assert {output for output, _ in seen} == OUTPUTS
    for (output, name), values in seen.items():
        numbers = shown(values)
        assert numbers, (output, name)
        first = values.index(numbers[0])
        assert None not in values[first:], (output, name, "null after a value")
        assert all(math.isfinite(v) and v > 0 for v in numbers), (output, name)
        assert numbers == sorted(numbers), (output, name, "went down")
        assert numbers[-1] < 2 * numbers[0], (output, name, "a false rise")


def counts(gw) -> dict:
    return gw.get("/status").json()["ConfiguredMeters"][0]["Checks"]["Counts"]


@pytest.fixture(autouse=True)
def no_watch_left():
    """A test that failed half-way leaves no recorder process or watching greenlet behind."""
    yield
    for watch in list(Watch.unfinished):
        watch.stop()
        watch.recorder.stop()


@pytest.fixture
def run(simulator, gateway, broker, mqtt_subscriber, tmp_path):
    """Start the simulator with ``sim_args``, a gateway publishing to mosquitto, and a watch on it."""
    def start(sim_args, *gateway_args):
        b = broker()
        sub = mqtt_subscriber(b.port, ["sdm630/#"])
        sim_started = time.monotonic()
        sim = simulator("sdm630:1", *sim_args)
        gw = gateway(sim.link, "sdm630:1", "-b", b.url, "--mqtt-per-value", "--ha-discovery", "-r", "0",
                     *gateway_args)
        watch = Watch(gw, sub, tmp_path)
        # The glitch is timed from the simulator's start: a gateway whose first value came after it
        # would take the glitched counter as its first value and see no glitch at all.
        late = time.monotonic() - sim_started
        assert late < GLITCH_AT - 0.5, f"the gateway's first value came {late:.1f} s after the simulator's start"
        return gw, watch
    return start


@pytest.mark.parametrize("flag, kind", [
    ("--energy-spike", "jump"), ("--energy-zero", "invalid"), ("--energy-nan", "invalid"), ("--energy-drop", "drop"),
])
def test_a_glitch_never_reaches_any_output(run, flag, kind):
    gw, watch = run((flag, str(GLITCH_AT)))
    wait_until(lambda: counts(gw)[kind] >= len(METER_COUNTERS), 15, what=f"the {kind} held back")
    gevent.sleep(1.0)                          # the outputs go on after the glitch
    assert_only_true_counts(watch.finish())
    assert counts(gw)["reset"] == counts(gw)["step"] == 0
    raw = gw.get("/last/1?raw=1").json()
    if flag == "--energy-drop":                # still low: only ?raw=1 shows what the meter says
        assert raw["TotalImport"] < gw.get("/last/1").json()["TotalImport"]


def test_a_real_reset_is_shown_once_after_its_confirmation(run):
    gw, watch = run(("--energy-reset", str(GLITCH_AT)), *SMALL_CONFIRM)

    def reset_of_total_import():
        events = gw.get("/status").json()["ConfiguredMeters"][0]["Checks"]["CounterEvents"]
        return [e for e in events if e["Value"] == "TotkWhImport" and e["Kind"] == "reset"]

    event, = wait_until(reset_of_total_import, 15, what="the confirmed reset")
    gevent.sleep(1.0)
    seen = watch.finish()
    assert {output for output, _ in seen} == OUTPUTS
    assert event["To"] < 1.0 < event["From"]
    for (output, name), values in seen.items():
        numbers = shown(values)
        falls = [i for i, (a, b) in enumerate(zip(numbers, numbers[1:])) if b < a]
        assert len(falls) <= 1, (output, name, "more than one step down")
        # per-value topics carry 3 decimals: a count of 0.0004 kWh just after the reset reads 0.000
        lowest = 0.0 if output == "mqtt value" else math.ulp(0.0)
        assert all(math.isfinite(v) and v >= lowest for v in numbers), (output, name)
        if name == "TotkWhImport":
            assert len(falls) == 1, (output, "the reset was never shown")
            after = numbers[falls[0] + 1]
            assert after < 1.0 and numbers[falls[0]] > 1.0
            assert numbers[falls[0] + 1:] == sorted(numbers[falls[0] + 1:])
    assert gw.log().count("TotkWhImport reset accepted after confirmation") == 1


def test_a_gateway_killed_during_a_drop_never_shows_less_after_its_restart(run, tmp_path):
    gw, watch = run(("--energy-drop", "3"), "--state-dir", str(tmp_path / "state"))
    wait_until(lambda: (tmp_path / "state" / "counters.json").exists(), 10, what="a first state file")
    wait_until(lambda: counts(gw)["drop"] > 0, 15, what="the drop held back")
    before = watch.finish()
    gw.kill()                                  # the file is a few seconds older than the last values shown
    assert_only_true_counts(before)
    highest = defaultdict(float)
    for (_, name), values in before.items():
        highest[name] = max(highest[name], *shown(values))

    gw.restart()
    again = Watch(gw, watch.sub, tmp_path, "again")
    wait_until(lambda: counts(gw)["drop"] >= 3 * len(METER_COUNTERS), 15, what="the drop held back again")
    gevent.sleep(1.0)
    after = again.finish()
    for (output, name), values in after.items():
        assert all(v >= highest[name] for v in shown(values)), (output, name)
    assert gw.get("/last/1").json()["TotalImport"] is None          # held: nothing it could not stand by
    assert gw.get("/last/1?raw=1").json()["TotalImport"] < highest["TotkWhImport"]
    assert "damaged" not in gw.log() and "counters.json" in gw.log()


@pytest.mark.parametrize("content", [b'{"format": "sdm-counters", "version": 1, "meters": {"Instr', b"\x00\xff junk"])
def test_a_torn_or_garbage_state_file_is_reported_and_ignored(simulator, gateway, tmp_path, content):
    state = tmp_path / "state"
    state.mkdir()
    (state / "counters.json").write_bytes(content)
    sim = simulator("sdm630:1")
    gw = gateway(sim.link, "sdm630:1", "--state-dir", str(state))
    assert "counters.json: damaged" in gw.log() and "ignored" in gw.log()
    reading = wait_until(lambda: (r := gw.get("/last/1").json())["TotalImport"] and r, 10, what="counters")
    assert reading["TotalImport"] == pytest.approx(gw.get("/last/1?raw=1").json()["TotalImport"], rel=1e-3)
    gw.stop()
    saved = json.loads((state / "counters.json").read_text())   # replaced by a good one at the exit
    assert saved["meters"]["Instrument1"]["counters"]["TotkWhImport"]["value"] > 0
