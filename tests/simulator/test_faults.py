"""Fault injection, checked against the gateway's own framing: each fault gives exactly its error kind."""

import io
import json
import os

import pytest

from sdm.framing import rtu
from sdm.framing.rtu import RtuLink
from sdm.hub import Hub, MeterUpdate
from sdm.meters.registry import lookup
from sdm.poller import Poller, PollSettings
from sdm.sanity import COUNTERS
from simulator.faults import (
    COLLISION,
    FAULTS,
    GATEWAY_KIND,
    OFFLINE,
    OK,
    FaultInjector,
    PluggableLine,
    ServedLog,
    parse_faults,
    parse_offline,
    parse_window,
)
from tests.fakes import MeterLine, meter_configs, virtual_meters
from tests.support import ServedValues, expected_errors, wait_until


def test_all_spreads_the_probability_evenly():
    faults = parse_faults("all=0.07, crc=0.01")
    assert set(faults) == set(FAULTS)
    assert faults["crc"] == pytest.approx(0.02)
    assert faults["late"] == pytest.approx(0.01)


@pytest.mark.parametrize("text,message", [
    ("foo=0.1", "unknown fault"), ("crc", "NAME=PROBABILITY"), ("crc=x", "NAME=PROBABILITY"),
    ("crc=1.5", "probability"), ("crc=0.6,late=0.6", "more than 1"),
])
def test_bad_fault_lists_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_faults(text)


def test_offline_windows_parse_and_refuse_nonsense():
    assert parse_offline("2@5-8.5") == (2, (5.0, 8.5))
    assert parse_window("0-1") == (0.0, 1.0)
    for bad in ("2", "2@8-5", "0@1-2", "2@a-b"):
        with pytest.raises(ValueError):
            parse_offline(bad)


def faulty_line(devices, faults, seed=1, log=None, offline=()):
    meters = virtual_meters(devices)
    clock = {"now": 0.0}
    injector = FaultInjector(meters, faults, seed, offline, log, started=0.0)
    line = MeterLine(meters, lambda request, reply: injector(request, reply, clock["now"]) or None)
    return line, injector, clock


def exchange(line, slave=1, start=0, count=2):
    try:
        rtu.exchange(line, slave, 4, start, count, timeout=0.01)
    except rtu.ModbusError as err:
        return err.kind
    return None


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "late"])
def test_each_fault_gives_the_gateway_the_error_it_stands_for(fault):
    line, injector, _ = faulty_line({1: "sdm630"}, {fault: 1.0})
    kinds = [exchange(line, start=start, count=count) for start in (0, 6, 0x48) for count in (2, 20)]
    assert kinds == [GATEWAY_KIND[fault]] * 6
    assert injector.counts == {fault: 6}


@pytest.mark.parametrize("next_slave,next_start", [(1, 0), (1, 2), (26, 0)],
                         ids=["identical retry", "same meter, other block", "other meter"])
def test_late_answer_is_never_taken_for_the_next_one(next_slave, next_start):
    """The held-back reply arrives after the next request, right before that request's own answer."""
    line, injector, _ = faulty_line({1: "sdm630", 26: "sdm630"}, {"late": 1.0})
    assert exchange(line) == "timeout"
    assert line.pending == b""                      # nothing yet: the gateway gave up
    assert exchange(line, next_slave, next_start) == "malformed"
    assert injector.counts == {"late": 1, COLLISION: 1}


def test_late_answer_glued_to_a_good_one_makes_both_unusable():
    line, _, _ = faulty_line({1: "sdm630"}, {"late": 1.0})
    exchange(line)
    request = rtu.build_request(1, 4, 0, 2)
    line.write(request)
    late_and_current = line.pending
    assert len(late_and_current) == 2 * rtu.reply_bytes(2)
    assert rtu.crc_ok(late_and_current[:9]) and rtu.crc_ok(late_and_current[9:])


def test_the_seed_makes_the_faults_repeatable():
    def outcomes(seed):
        line, _, _ = faulty_line({1: "sdm630"}, parse_faults("all=0.7"), seed=seed)
        return [exchange(line, start=2 * (n % 30)) for n in range(200)]

    assert outcomes(5) == outcomes(5)
    assert outcomes(5) != outcomes(6)


def test_offline_meter_is_silent_inside_its_window_only():
    line, injector, clock = faulty_line({1: "sdm630", 2: "sdm120"}, {}, offline=[(2, (1.0, 2.0))])
    clock["now"] = 1.5
    assert [exchange(line, 2), exchange(line, 1)] == ["timeout", None]
    clock["now"] = 2.0
    assert exchange(line, 2) is None
    assert injector.counts == {OFFLINE: 1, OK: 2}


def test_counters_and_published_values_match_the_served_log():
    """In-process version of the end-to-end check: every fault counted as its kind, per meter,
    and every published block is exactly one clean reply the simulator served."""
    devices = {1: "sdm630", 2: "sdm120", 26: "janitza", 36: "dzg"}
    stream = io.StringIO()
    line, injector, _ = faulty_line(devices, parse_faults("all=0.2"), seed=11, log=ServedLog(stream))
    hub = Hub(meter_configs(devices))
    published = []
    hub.subscribe(lambda event: isinstance(event, MeterUpdate) and published.append(event))
    line.open()
    settings = PollSettings(pauses={lookup(n).key: 0.0 for n in devices.values()}, reprobe_min=0.0, reprobe_max=0.0)
    poller = Poller(hub, RtuLink(line), meter_configs(devices), settings)
    for _ in range(1500):
        poller.step()
    records = [json.loads(text) for text in stream.getvalue().splitlines()]
    requests = [r for r in records if "outcome" in r]
    assert len(requests) == sum(m.requests for m in hub.meters.values()) == 1500
    assert set(injector.counts) >= set(FAULTS) | {COLLISION}
    for meter in hub.meters.values():
        assert dict(meter.errors) == expected_errors(requests, meter.device_id), meter.name
    served = ServedValues(records)
    assert len(published) == injector.counts[OK]
    # what the checks let through (counters carry their last accepted value: not this reply's)
    assert all(served.served(event.device_id, {name: value for name, value in event.values.items()
                                               if value is not None and name not in COUNTERS})
               for event in published)


def test_unplugged_line_closes_and_comes_back_on_a_new_path(tmp_path):
    link = str(tmp_path / "tty")
    stream = io.StringIO()
    line = PluggableLine(link, [(0.2, 0.6)], ServedLog(stream))
    try:
        first = os.path.realpath(link)
        gateway_end = os.open(link, os.O_RDWR | os.O_NOCTTY)
        wait_until(lambda: line.read(0.05) == b"" and not os.path.lexists(link), 2, what="unplug")
        assert os.read(gateway_end, 10) == b""     # the gateway's end sees the adapter gone
        os.close(gateway_end)
        line.write(b"lost")                         # writes while unplugged go nowhere
        wait_until(lambda: line.read(0.05) == b"" and os.path.lexists(link), 2, what="replug")
        assert os.path.realpath(link) != first
        events = [json.loads(text)["event"] for text in stream.getvalue().splitlines()]
        assert events == ["start", "unplug", "replug"]
    finally:
        line.close()
