"""The bus scan in-process: pure parts, then scans of the simulator on a pty."""

import math
from collections import Counter

import pytest

from sdm.detect import Scanner, device_list, families, parse_ids, plausible_voltage
from sdm.framing import rtu
from sdm.framing.rtu import RtuLink
from sdm.meters.registry import lookup
from sdm.transport import comset
from sdm.transport.serial import SerialTransport

# The simulator is a process that a loaded machine may starve for tens of ms;
# real meters are not.  Detection is tested with room for that, speed in bench/scan.py.
TURNAROUND = 0.150
MIXED = "sdm630:1,sdm120:2,sdm220:3,sdm230:4,sdm530:5,sdm630:7,janitza:26,dzg:36"
# id -> (-d keyword, model proven)
EXPECTED = {1: ("sdm630", True), 2: ("sdm120", True), 3: ("sdm", False), 4: ("sdm", False),
            5: ("sdm", False), 7: ("sdm", False), 26: ("janitza", True), 36: ("dzg", True)}


@pytest.mark.parametrize("value, ok", [
    (230.0, True), (207.0, True), (253.0, True), (110.0, True), (99.0, True), (121.0, True),
    (206.9, False), (253.1, False), (98.9, False), (121.1, False), (160.0, False),
    (0.0, False), (-230.0, False), (math.nan, False), (math.inf, False)])
def test_plausible_voltage_is_ten_percent_of_110_or_230(value, ok):
    assert plausible_voltage(value) is ok


def test_id_lists_and_ranges():
    assert parse_ids("1-247") == list(range(1, 248))
    assert parse_ids(" 26, 1,5, 20-22,5") == [1, 5, 20, 21, 22, 26]


@pytest.mark.parametrize("text", ["", "0", "248", "1-248", "5-1", "a", "1-b", ",", "1--3"])
def test_bad_id_lists_say_why(text):
    with pytest.raises(ValueError) as err:
        parse_ids(text)
    assert str(err.value)


def test_families_group_models_by_probe_register():
    by_keyword = {family.keyword: family for family in families()}
    assert set(by_keyword) == {"sdm", "janitza", "dzg"}
    eastron = by_keyword["sdm"]
    assert {m.key for m in eastron.models} == {"sdm120", "sdm220", "sdm230", "sdm530", "sdm630"}
    assert eastron.by_code(0x0070) is lookup("sdm630")
    assert eastron.by_code(0x0020) is lookup("sdm120")
    assert eastron.by_code(None) is None and eastron.by_code(0x0079) is None
    assert (by_keyword["dzg"].probe.fc, by_keyword["dzg"].probe.address) == (0x03, 0x0004)


class CountingLine(SerialTransport):
    """The real transport, counting the requests sent to each id."""

    def __init__(self, *args):
        super().__init__(*args)
        self.requests = Counter()

    def write(self, data: bytes) -> None:
        self.requests[data[0]] += 1
        super().write(data)


@pytest.fixture
def scan_line(simulator):
    lines = []

    def open_line(devices: str, *extra: str) -> CountingLine:
        sim = simulator(devices, *extra)
        line = CountingLine(str(sim.link), comset(2))
        line.open()
        lines.append(line)
        return line

    yield open_line
    for line in lines:
        line.close()


def test_every_simulated_meter_is_found_with_its_type_and_nothing_else(scan_line):
    line = scan_line(MIXED, "--no-meter-code", "7", "--garbage-id", "9")
    outcomes = {}
    ids = [*range(1, 11), 25, 26, 36, 37]
    found = Scanner(RtuLink(line), TURNAROUND).scan(ids, lambda outcome: outcomes.update({outcome.slave: outcome}))
    assert {m.slave: (m.keyword, m.proven) for m in found} == EXPECTED
    assert [m.slave for m in found] == sorted(EXPECTED)
    for meter in found:
        assert plausible_voltage(meter.value)
    assert found[0].meter_code == 0x0070 and found[1].meter_code == 0x0020
    assert "SDM630" in found[0].describe() and "SDM120" in found[1].describe()
    for model_name in ("SDM220", "SDM230", "SDM530", "SDM630"):
        assert model_name not in outcomes[3].describe()   # never a guessed model
    assert outcomes[9].answered and outcomes[9].found is None
    silent = [slave for slave, o in outcomes.items() if not o.answered]
    assert silent == [6, 8, 10, 25, 37]
    assert device_list(found) == "sdm630:1,sdm120:2,sdm:3,sdm:4,sdm:5,sdm:7,janitza:26,dzg:36"


def test_a_silent_id_costs_exactly_one_request(scan_line):
    line = scan_line("sdm630:1,janitza:26")
    Scanner(RtuLink(line), TURNAROUND).scan([*range(1, 9), 26])
    assert all(line.requests[slave] == 1 for slave in range(2, 9))
    assert line.requests[1] == 2    # meter code, then the L1 voltage that proves it
    assert line.requests[26] == 3   # meter code (refused), Eastron voltage (refused), Janitza voltage


def test_a_device_answering_garbage_is_never_a_meter(scan_line):
    line = scan_line("sdm630:1", "--garbage-id", "2,3,4,5,6")
    outcomes = []
    found = Scanner(RtuLink(line), TURNAROUND).scan(range(1, 7), outcomes.append)
    assert [m.slave for m in found] == [1]
    assert all(o.answered and o.found is None and o.detail for o in outcomes[1:])


def test_a_silent_bus_finds_nothing(scan_line):
    line = scan_line("sdm630:200")
    outcomes = []
    assert Scanner(RtuLink(line), TURNAROUND).scan(range(1, 9), outcomes.append) == []
    assert not any(o.answered for o in outcomes)
    assert all(line.requests[slave] == 1 for slave in range(1, 9))


class ScriptedLine:
    """A line whose reply bytes become readable at a given time after the request."""

    char_time = 0.001

    def __init__(self, reply: bytes, delay: float, clock):
        self.reply, self.delay, self.clock = reply, delay, clock
        self.ready_at = math.inf

    def clear_input(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.ready_at = self.clock.now + len(data) * self.char_time + self.delay

    def read(self, size: int, deadline: float) -> bytes:
        if deadline < self.ready_at:
            self.clock.now = max(self.clock.now, deadline)
            return b""
        self.clock.now = max(self.clock.now, self.ready_at)
        data, self.reply = self.reply[:size], self.reply[size:]
        return data

    def settle(self, quiet: float, limit: float) -> None:
        pass


class FakeClock:
    now = 1000.0


@pytest.mark.parametrize("delay, prompt, answers", [
    (0.020, False, True), (0.020, True, True),      # begins within the turnaround
    (0.035, False, True), (0.035, True, False)])    # late, but finished within the whole deadline
def test_prompt_exchange_gives_up_when_the_reply_has_not_begun_within_the_turnaround(monkeypatch, delay, prompt,
                                                                                    answers):
    from simulator.server import register_reply
    clock = FakeClock()
    monkeypatch.setattr(rtu.time, "monotonic", lambda: clock.now)
    line = ScriptedLine(register_reply(1, 4, [0x4366, 0x0000]), delay, clock)
    if answers:
        assert rtu.exchange(line, 1, 4, 0, 2, timeout=0.030, prompt=prompt) == [0x4366, 0x0000]
    else:
        with pytest.raises(rtu.NoReply):
            rtu.exchange(line, 1, 4, 0, 2, timeout=0.030, prompt=prompt)
