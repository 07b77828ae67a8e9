"""Poll intervals and the fast/slow sets, run on a simulated clock (no wall time)."""

import pytest

from sdm.hub import AVAILABLE
from sdm.meters.model import MeterModel
from sdm.meters.registry import lookup
from sdm.plan import make_block, wire_time
from sdm.poller import PollSettings
from sdm.schedule import Schedule, is_slow, next_due, parse_seconds, schedules
from tests.fakes import FrozenClock, MeterLine, bus_poller, virtual_meters


class TimedLine(MeterLine):
    """Virtual meters whose exchanges take their wire time on a simulated clock."""

    def __init__(self, meters, clock):
        super().__init__(meters)
        self.clock = clock
        self.log = []   # (time the request went out, slave, registers asked for)

    def write(self, data):
        super().write(data)
        start, count = int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:6], "big")
        self.log.append((self.clock.now, data[0], range(start, start + count)))
        self.clock.now += wire_time([make_block_for(self.meters[data[0]], data[1], start, count)],
                                    self.char_time)


def make_block_for(meter, fc, start, count):
    regs = [r for r in meter.model.registers if r.fc == fc and start <= r.address < start + count]
    block = make_block(regs)
    assert (block.start, block.count) == (start, count)
    return block


def make_bus(devices, **settings):
    """A poller of ``devices`` on a line that takes wire time on a simulated clock."""
    clock = FrozenClock()
    meters = virtual_meters(devices, clock)
    line = TimedLine(meters, clock)
    line.open()
    settings.setdefault("pauses", {lookup(n).key: 0.0 for n in devices.values()})

    def sleep(seconds):
        clock.now += seconds

    hub, poller = bus_poller(devices, line, PollSettings(**settings), clock=clock, sleep=sleep)
    return line, hub, poller


def run_for(line, poller, seconds):
    end = line.clock.now + seconds
    while line.clock.now < end:
        poller.step()


def run_bus(devices, seconds, **settings):
    """Poll ``devices`` for ``seconds`` of simulated time; the line's log and the hub."""
    line, hub, poller = make_bus(devices, **settings)
    run_for(line, poller, seconds)
    return line, hub, poller


def read_times(line, slave, name):
    """When each request that covered measurement ``name`` of meter ``slave`` went out."""
    reg = lookup_register(line, slave, name)
    return [t for t, s, span in line.log if s == slave and reg.address in span]


def lookup_register(line, slave, name):
    return line.meters[slave].model.register(name)


def test_by_default_every_value_every_cycle_back_to_back():
    line, hub, poller = run_bus({1: "sdm630"}, 10.0)
    reader = poller.readers[0]
    cycle = wire_time(reader.blocks, line.char_time)
    assert hub.meters["M1"].complete_readings == pytest.approx(10.0 / cycle, abs=1)
    assert len(line.log) >= len(reader.blocks) * hub.meters["M1"].complete_readings
    for name in ("VolLocPhsA", "TotkWhImport", "Freq", "ThdVolPhsA"):
        times = read_times(line, 1, name)
        assert len(times) == pytest.approx(10.0 / cycle, abs=1)


def test_poll_interval_spaces_one_meter_and_lets_the_other_use_the_bus():
    line, hub, _ = run_bus({1: "sdm630", 2: "sdm120"}, 30.0,
                           schedules={1: Schedule(interval=2.0), 2: Schedule()})
    starts = read_times(line, 1, "VolLocPhsA")
    assert len(starts) == 15
    longest_exchange = max(b[0] - a[0] for a, b in zip(line.log, line.log[1:]))
    for k, start in enumerate(starts):   # on a fixed 2 s grid, late by one exchange at most
        assert 0 <= start - starts[0] - 2.0 * k <= longest_exchange
    assert hub.meters["M1"].complete_readings == 15
    assert hub.meters["M2"].complete_readings > 10 * hub.meters["M1"].complete_readings


def test_interval_shorter_than_a_cycle_changes_nothing():
    fast, _, _ = run_bus({1: "sdm630"}, 5.0)
    spaced, _, _ = run_bus({1: "sdm630"}, 5.0, schedules={1: Schedule(interval=0.01)})
    assert len(spaced.log) == len(fast.log)


def test_slow_set_every_n_seconds_fast_set_every_cycle():
    line, hub, poller = run_bus({1: "sdm630"}, 60.0, schedules={1: Schedule(slow_interval=10.0)})
    reader = poller.readers[0]
    for name in ("TotkWhImport", "Freq", "ThdVol", "TotkVArhPhsC"):
        times = read_times(line, 1, name)
        assert len(times) == 6
        for k, read_at in enumerate(times):
            assert 0 <= read_at - times[0] - 10.0 * k <= wire_time(reader.blocks, line.char_time)
    voltage = read_times(line, 1, "VolLocPhsA")
    assert len(voltage) == hub.meters["M1"].complete_readings > 60.0 / wire_time(reader.blocks, line.char_time) * 1.5
    fast_cycle = wire_time(reader.fast_blocks, line.char_time)
    assert max(b - a for a, b in zip(voltage, voltage[1:])) < wire_time(reader.blocks, line.char_time) + 1e-9
    assert min(b - a for a, b in zip(voltage, voltage[1:])) == pytest.approx(fast_cycle)


def test_fast_plan_holds_exactly_the_fast_set():
    _, _, poller = run_bus({26: "janitza"}, 0.5, schedules={26: Schedule(slow_interval=10.0)})
    reader = poller.readers[0]
    fast = {reg.name for block in reader.fast_blocks for reg in block.registers}
    model = lookup("janitza")
    assert fast == {name for name in model.names if not is_slow(name)}
    assert {"WLocPhsA", "VolLocPhsB", "AmpLocPhsC", "AngLocPhsA", "TotW"} <= fast
    assert not fast & {"Freq", "TotkWhImport", "TotkWhExportPhsA"}


def test_a_block_refused_in_the_fast_plan_is_read_value_by_value_there():
    line, hub, poller = make_bus({2: "sdm120"}, schedules={2: Schedule(slow_interval=5.0)})
    model = lookup("sdm120")
    # a meter without power factor (0x001E): exception 02 for any read that covers it
    line.meters[2].model = MeterModel(**{**model.__dict__, "address_space": ((4, 0, 0x1E), (4, 0x20, 0x180))})
    run_for(line, poller, 20.0)
    reader = poller.readers[0]
    assert hub.meters["M2"].status == AVAILABLE
    fast = [reg.name for block in reader.fast_blocks for reg in block.registers]
    assert "AngLocPhsA" not in fast and "VolLocPhsA" in fast and "WLocPhsA" in fast
    assert hub.meters["M2"].values["WLocPhsA"] is not None and hub.meters["M2"].values.get("AngLocPhsA") is None
    late = [span for t, _, span in line.log if t > line.clock.now - 10.0]
    assert not any(0x1E in span for span in late)   # both plans have learnt it by now


def test_a_cycle_reads_its_shortest_requests_first():
    _, _, poller = run_bus({1: "sdm630", 26: "janitza"}, 0.0)
    for reader in poller.readers:
        counts = [block.count for block in reader.blocks]
        assert counts == sorted(counts)


def test_one_value_per_request_when_merging_is_off():
    line, hub, poller = run_bus({2: "sdm120"}, 2.0, merge=False)
    model = lookup("sdm120")
    assert all(len(span) == 2 for _, _, span in line.log)
    assert len(poller.readers[0].blocks) == len(model.registers)
    assert set(hub.meters["M2"].values) == set(model.names)


@pytest.mark.parametrize("name,slow", [
    ("TotkWhImport", True), ("TotkVArhExportPhsB", True), ("ThdVolPhsA", True), ("Freq", True),
    ("WLocPhsA", False), ("TotW", False), ("TotWImport", False), ("VolLocPhsC", False),
    ("AmpLocPhsA", False), ("AngLocPhsA", False), ("TotPF", False), ("PhAngPhsA", False),
])
def test_fast_and_slow_sets(name, slow):
    assert is_slow(name) is slow


def test_parse_seconds_for_everyone_and_per_meter():
    assert parse_seconds(["5", "2=0.5", "26=30"], "--interval") == (5.0, {2: 0.5, 26: 30.0})
    assert schedules([1, 2], ["2=0.5"], ["10"]) == {
        1: Schedule(0.0, 10.0), 2: Schedule(0.5, 10.0)}
    assert schedules([1]) == {1: Schedule()}


@pytest.mark.parametrize("item", ["x", "1=x", "-1", "1=-2", "0=5", "248=5", "inf", "nan", "abc=3"])
def test_bad_seconds_are_clear_errors(item):
    with pytest.raises(ValueError, match="--slow"):
        parse_seconds([item], "--slow")


@pytest.mark.parametrize("due,started,interval,expected", [
    (0.0, 1000.0, 2.0, 1002.0),      # first round: the grid starts here
    (1002.0, 1002.3, 2.0, 1004.0),   # a little late: stay on the grid
    (1004.0, 1007.5, 2.0, 1009.5),   # a whole interval late: a new grid, no burst
    (1000.0, 1000.4, 0.0, 1000.4),   # no interval: due at once
])
def test_next_due_keeps_a_fixed_grid(due, started, interval, expected):
    assert next_due(due, started, interval) == pytest.approx(expected)


def test_schedule_for_an_unconfigured_meter_is_an_error():
    with pytest.raises(ValueError, match="meter id 3"):
        schedules([1, 2], ["3=1"])
