"""The state directory, atomic writes, and the counter state file across restarts and crashes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sdm.meters.registry import lookup
from sdm.sanity import STATE_FILE, CounterFile, CounterGuard, CounterPolicy
from sdm.state import StateError, atomic_write, resolve_state_dir, state_dir
from tests.fakes import FrozenClock
from tests.support import ROOT, wait_until

SDM630 = lookup("sdm630")
MODELS = {"Instrument1": SDM630, "Instrument2": lookup("sdm120")}
QUICK = CounterPolicy(confirm_readings=2, confirm_seconds=1.0)

# -- the state directory ----------------------------------------------------------------------------


@pytest.mark.parametrize("given, environ, expected", [
    ("/srv/sdm", {"STATE_DIRECTORY": "/var/lib/sdm", "HOME": "/home/u"}, "/srv/sdm"),
    (None, {"STATE_DIRECTORY": "/var/lib/sdm", "XDG_STATE_HOME": "/x", "HOME": "/home/u"}, "/var/lib/sdm"),
    (None, {"STATE_DIRECTORY": "/var/lib/sdm:/var/lib/other", "HOME": "/home/u"}, "/var/lib/sdm"),
    (None, {"STATE_DIRECTORY": "", "XDG_STATE_HOME": "/x/state", "HOME": "/home/u"}, "/x/state/sdm"),
    (None, {"XDG_STATE_HOME": "relative/state", "HOME": "/home/u"}, "/home/u/.local/state/sdm"),
    (None, {"HOME": "/home/u"}, "/home/u/.local/state/sdm"),
])
def test_the_state_directory_follows_flag_then_systemd_then_xdg_then_home(given, environ, expected):
    assert resolve_state_dir(given, environ) == Path(expected)


def test_the_state_directory_is_created_private_on_demand(tmp_path):
    path = state_dir(None, {"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert path == tmp_path / "xdg" / "sdm" and path.is_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert state_dir(str(path)) == path          # an existing one is fine


def test_a_state_directory_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match=str(blocker)):
        state_dir(str(blocker / "sdm"))
    with pytest.raises(StateError, match="not a directory"):
        state_dir(str(blocker))


# -- atomic writes ----------------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "f.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write(target, b"old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.json"]


WRITER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from sdm.state import atomic_write
    path = Path(sys.argv[1])
    n = 0
    while True:
        n += 1
        atomic_write(path, json.dumps({"n": n, "pad": "x" * 300000}).encode())
        if n == 3:
            print("writing", flush=True)
""")


def test_a_writer_killed_at_any_moment_leaves_a_whole_file(tmp_path):
    target = tmp_path / "state.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.0, 0.013, 0.029, 0.051, 0.097):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout.readline() == b"writing\n"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
        state = json.loads(target.read_bytes())
        assert state["n"] >= 3 and state["pad"] == "x" * 300000


# -- the counter state file -------------------------------------------------------------------------


def _accept(guard: CounterGuard, key: str, values: dict, start: float, readings: int = 3) -> float:
    """Read steadily rising values until the guard has accepted them; the time of the last reading."""
    now = start
    for i in range(readings):
        now = start + i
        guard.apply(key, MODELS[key], {name: value + i * 0.001 for name, value in values.items()}, now)
    return now


def test_the_last_accepted_values_survive_a_restart(tmp_path):
    guard = CounterGuard(QUICK)
    _accept(guard, "Instrument1", {"TotkWhImport": 1234.5, "TotkVArhExportPhsC": 7.25}, 1e9)
    _accept(guard, "Instrument2", {"TotkWhImport": 99.0}, 1e9)
    store = CounterFile(tmp_path / STATE_FILE)
    store.save(guard)
    restarted = CounterGuard(QUICK)
    assert CounterFile(tmp_path / STATE_FILE).load(restarted, MODELS) == []
    assert restarted.snapshot() == guard.snapshot()
    assert restarted.last_accepted("Instrument1", "TotkWhImport") == pytest.approx(1234.502)
    # at once, no confirmation: the first reading after the restart is judged against the file
    out, _ = restarted.apply("Instrument1", SDM630, {"TotkWhImport": 1234.6}, 1e9 + 10)
    assert out["TotkWhImport"] == 1234.6


def test_after_a_restart_nothing_lower_than_the_file_is_published(tmp_path):
    guard = CounterGuard(QUICK)
    _accept(guard, "Instrument1", {"TotkWhImport": 1234.5}, 1e9)
    CounterFile(tmp_path / STATE_FILE).save(guard)
    restarted = CounterGuard(QUICK)
    CounterFile(tmp_path / STATE_FILE).load(restarted, MODELS)
    saved = restarted.last_accepted("Instrument1", "TotkWhImport")
    for raw in (0.0, 617.0, 1234.0, None, 1234.49):
        out, events = restarted.apply("Instrument1", SDM630, {"TotkWhImport": raw}, 1e9 + 100)
        # held, and not even the saved value is shown: the gateway may have published more before
        # it died than the file holds
        assert out["TotkWhImport"] is None and events and events[0].held
    out, events = restarted.apply("Instrument1", SDM630, {"TotkWhImport": 1234.6}, 1e9 + 101)
    assert out["TotkWhImport"] == 1234.6 and not events        # a true reading: shown at once
    out, events = restarted.apply("Instrument1", SDM630, {"TotkWhImport": 617.0}, 1e9 + 102)
    assert out["TotkWhImport"] == 1234.6 and events[0].kind == "drop"
    assert saved >= 1234.5


@pytest.mark.parametrize("content", [
    b"", b"{", b'{"format": "sdm-counters", "version": 1, "meters": {"Instrument1": {"model": "sdm6',
    b"\xff\xfe\x00garbage", b"[1, 2, 3]", b'{"format": "other", "version": 1, "meters": {}}',
    b'{"format": "sdm-counters", "version": 99, "meters": {}}', b"null",
])
def test_a_torn_or_garbage_state_file_is_reported_and_ignored(tmp_path, content):
    path = tmp_path / STATE_FILE
    path.write_bytes(content)
    guard = CounterGuard(QUICK)
    warnings = CounterFile(path).load(guard, MODELS)
    assert len(warnings) == 1 and str(path) in warnings[0] and "ignored" in warnings[0]
    assert guard.snapshot()["meters"] == {}
    out, _ = guard.apply("Instrument1", SDM630, {"TotkWhImport": 10.0}, 1e9)
    assert out["TotkWhImport"] == 10.0           # starts afresh: nothing held against the meter


def test_entries_that_do_not_fit_the_configuration_are_ignored_and_bad_ones_reported(tmp_path):
    path = tmp_path / STATE_FILE
    entry = {"value": 10.0, "at": 1e9}
    path.write_text(json.dumps({"format": "sdm-counters", "version": 1, "meters": {
        "Gone": {"model": "sdm630", "counters": {"TotkWhImport": entry}},
        "Instrument1": {"model": "sdm630", "counters": {
            "TotkWhImport": entry, "TotkWhExport": {"value": -3.0, "at": 1e9},
            "TotkWh": {"value": "12", "at": 1e9}, "TotkVArh": {"value": True, "at": 1e9},
            "TotkVArhImport": {"value": 5.0}, "VolLocPhsA": entry, "TotkWhImportPhsA": [1, 2]}},
        "Instrument2": {"model": "janitza", "counters": {"TotkWhImport": entry}},
    }}))
    guard = CounterGuard(QUICK)
    warnings = CounterFile(path).load(guard, MODELS)
    assert not any("Gone" in text for text in warnings)               # no longer configured: silently
    assert any("Instrument2" in text and "janitza" in text for text in warnings)
    bad = [text for text in warnings if "Instrument1" in text]
    assert len(bad) == 6
    assert guard.snapshot()["meters"] == {"Instrument1": {"model": "sdm630", "counters": {"TotkWhImport": entry}}}


def test_the_file_is_written_when_due_not_on_every_reading(tmp_path):
    clock = FrozenClock(0.0)
    path = tmp_path / STATE_FILE
    store = CounterFile(path, interval=60.0, clock=clock)
    guard = CounterGuard(QUICK)
    assert store.maybe_save(guard) is None and not path.exists()      # nothing accepted: nothing to write
    now = _accept(guard, "Instrument1", {"TotkWhImport": 100.0}, 1e9)
    store.maybe_save(guard)
    first = json.loads(path.read_text())
    saved = first["meters"]["Instrument1"]["counters"]["TotkWhImport"]["value"]
    for i in range(1, 30):                       # more values accepted within the interval: not yet
        clock.now += 1.0
        guard.apply("Instrument1", SDM630, {"TotkWhImport": saved + i * 0.001}, now + i)
        assert not store.due(guard)
        store.maybe_save(guard)
    assert json.loads(path.read_text()) == first
    clock.now += 31.0
    assert store.due(guard)
    store.maybe_save(guard)
    assert json.loads(path.read_text())["meters"]["Instrument1"]["counters"]["TotkWhImport"]["value"] > saved
    assert not store.due(guard)


def test_a_confirmed_reset_is_written_at_once(tmp_path):
    clock = FrozenClock(0.0)
    path = tmp_path / STATE_FILE
    store = CounterFile(path, interval=60.0, clock=clock)
    guard = CounterGuard(QUICK)
    now = _accept(guard, "Instrument1", {"TotkWhImport": 100.0}, 1e9)
    store.maybe_save(guard)
    for i in range(1, 4):                         # cleared meter: 0.5, 0.501, ... confirmed in 2 readings
        clock.now += 1.0
        guard.apply("Instrument1", SDM630, {"TotkWhImport": 0.5 + i * 0.001}, now + i)
        store.maybe_save(guard)
    assert guard.confirmations == 1
    value = json.loads(path.read_text())["meters"]["Instrument1"]["counters"]["TotkWhImport"]["value"]
    assert value < 1.0


def test_a_file_that_cannot_be_written_is_reported_not_raised_and_retried_later(tmp_path):
    clock = FrozenClock(0.0)
    store = CounterFile(tmp_path / "missing-dir" / STATE_FILE, interval=60.0, clock=clock)
    guard = CounterGuard(QUICK)
    _accept(guard, "Instrument1", {"TotkWhImport": 100.0}, 1e9)
    warning = store.maybe_save(guard)
    assert warning and "cannot be written" in warning and "missing-dir" in warning
    assert store.maybe_save(guard) is None                              # not again on the next reading
    clock.now += 61.0
    assert store.maybe_save(guard) is not None                          # but after the interval


def test_an_unreadable_state_file_is_reported(tmp_path):
    path = tmp_path / STATE_FILE
    path.mkdir()                                  # a directory where the file should be
    warnings = CounterFile(path).load(CounterGuard(), MODELS)
    assert len(warnings) == 1 and "cannot be read" in warnings[0]


GATEWAY = textwrap.dedent("""
    import sys
    from pathlib import Path
    from sdm.meters.registry import lookup
    from sdm.sanity import CounterFile, CounterGuard, CounterPolicy
    model = lookup("sdm630")
    guard = CounterGuard(CounterPolicy(confirm_readings=2, confirm_seconds=1.0))
    store = CounterFile(Path(sys.argv[1]), interval=0.02)
    value, now = 500.0, 1e9
    while True:
        value += 0.001
        now += 0.1
        out, _ = guard.apply("Instrument1", model, {"TotkWhImport": value}, now)
        store.maybe_save(guard)
        if out["TotkWhImport"] is not None:
            print(repr(out["TotkWhImport"]), now, flush=True)
""")


def test_a_gateway_killed_and_restarted_never_publishes_a_counter_lower_than_before(tmp_path):
    path = tmp_path / STATE_FILE
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", GATEWAY, str(path)], stdout=subprocess.PIPE, env=env)
    published = []
    try:
        wait_until(lambda: path.exists(), timeout=20, what="a first state file")
        for _ in range(2000):
            published.append(proc.stdout.readline().split())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        published.extend(line.split() for line in proc.stdout.read().splitlines())
        proc.stdout.close()
    values = [float(line[0]) for line in published if len(line) == 2]
    last_time = float(published[-1][1]) if len(published[-1]) == 2 else float(published[-2][1])
    restarted = CounterGuard(QUICK)
    assert CounterFile(path).load(restarted, {"Instrument1": SDM630}) == []
    saved = restarted.last_accepted("Instrument1", "TotkWhImport")
    # the file holds a value the killed gateway published, or the one it was about to print
    assert saved in values or saved == pytest.approx(values[-1] + 0.001)
    outs = []
    for i, raw in enumerate([values[0], 0.0, saved / 2, None, saved - 0.5, saved + 0.01]):
        out, _ = restarted.apply("Instrument1", SDM630, {"TotkWhImport": raw}, last_time + i + 1)
        outs.append(out["TotkWhImport"])
    assert all(value is None or value >= saved for value in outs)
    assert outs[-1] == saved + 0.01
