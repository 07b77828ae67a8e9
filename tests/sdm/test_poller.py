"""The bus loop against virtual meters wired in-process."""

import struct

import pytest

from sdm.hub import AVAILABLE, UNAVAILABLE
from sdm.meters.model import MeterModel
from sdm.meters.registry import lookup
from sdm.poller import REPLAN_MAX, REPLAN_MIN, PollSettings
from tests.fakes import MeterLine, bus_poller, virtual_meters


def make_poller(devices, mangle=None, **settings):
    meters = virtual_meters(devices)
    line = MeterLine(meters, mangle)
    line.open()
    settings.setdefault("pauses", {lookup(n).key: 0.0 for n in devices.values()})
    hub, poller = bus_poller(devices, line, PollSettings(**settings))
    return poller, hub, meters, line


def run_steps(poller, count):
    for _ in range(count):
        poller.step()


def as_float32(value):
    return struct.unpack(">f", struct.pack(">f", value))[0]


@pytest.mark.parametrize("type_name", ["sdm630", "sdm120", "sdm220", "sdm230", "sdm530", "janitza", "dzg"])
def test_one_cycle_reads_every_value_the_meter_served(type_name):
    poller, hub, meters, line = make_poller({7: type_name})
    reader = poller.readers[0]
    run_steps(poller, len(reader.blocks))
    state = hub.meters["M7"]
    assert state.complete_readings == 1
    assert len(line.requests) == len(reader.blocks)
    physics = meters[7].physics.values
    model = lookup(type_name)
    assert set(state.raw) == set(model.names)      # as read: the hub's checks are tested elsewhere
    for reg in model.registers:
        expected = physics[reg.name]
        if reg.encoding.kind == "uint32":
            expected = round(expected * reg.encoding.divisor) / reg.encoding.divisor
        else:
            expected = as_float32(expected * reg.encoding.divisor) / reg.encoding.divisor
        assert state.raw[reg.name] == pytest.approx(expected, rel=1e-6), reg.name


def test_meters_interleave_on_the_bus():
    poller, hub, _, line = make_poller({1: "sdm630", 26: "janitza"})
    run_steps(poller, 4)
    assert [req[0] for req in line.requests] == [1, 26, 1, 26]


def test_refused_block_falls_back_to_single_values_and_remembers():
    model = lookup("sdm120")
    # a meter that lacks the frequency register: exception 02 for any read covering 0x0046
    holey = MeterModel(**{**model.__dict__, "address_space": ((4, 0, 0x46), (4, 0x48, 0x180))})
    poller, hub, meters, line = make_poller({2: "sdm120"})
    meters[2].model = holey
    run_steps(poller, 20)
    state = hub.meters["M2"]
    assert state.status == AVAILABLE
    assert state.values.get("Freq") is None
    assert state.values["TotkWhImport"] > 0 and state.values["VolLocPhsA"] > 200
    reader = poller.readers[0]
    assert "Freq" not in {reg.name for block in reader.blocks for reg in block.registers}
    assert state.errors["exception"] >= 2


def test_a_refused_value_turns_null_and_its_block_is_asked_for_again_after_a_back_off():
    model = lookup("sdm120")
    holey = MeterModel(**{**model.__dict__, "address_space": ((4, 0, 0x46), (4, 0x48, 0x180))})
    clock = {"now": 1000.0}
    meters = virtual_meters({2: "sdm120"})
    line = MeterLine(meters)
    line.open()
    hub, poller = bus_poller({2: "sdm120"}, line, PollSettings(pauses={model.key: 0.0}),
                             clock=lambda: clock["now"])
    reader = poller.readers[0]
    run_steps(poller, len(reader.blocks))
    state = hub.meters["M2"]
    assert 45 < state.values["Freq"] < 55                       # read while the meter had it
    meters[2].model = holey                                     # one refusal (a glitch, or a firmware swap)
    run_steps(poller, 12)
    assert state.values["Freq"] is None and state.raw["Freq"] is None   # never the old number again
    assert b'"Frequency":null' in state.readings_json()
    whole = len(poller.readers[0].blocks)
    meters[2].model = model                                     # the meter answers it again
    clock["now"] += REPLAN_MIN - 1
    run_steps(poller, 6)
    assert state.values["Freq"] is None                         # not before the back-off
    clock["now"] += 2
    run_steps(poller, 8)
    assert 45 < state.values["Freq"] < 55                       # asked for whole again, and read
    assert len(reader.blocks) < whole                           # the merged plan is back


def test_a_block_refused_again_waits_twice_as_long_up_to_the_ceiling():
    model = lookup("sdm120")
    holey = MeterModel(**{**model.__dict__, "address_space": ((4, 0, 0x46), (4, 0x48, 0x180))})
    clock = {"now": 1000.0}
    meters = virtual_meters({2: "sdm120"})
    meters[2].model = holey
    line = MeterLine(meters)
    line.open()
    hub, poller = bus_poller({2: "sdm120"}, line, PollSettings(pauses={model.key: 0.0}),
                             clock=lambda: clock["now"])
    reader = poller.readers[0]
    delays = []
    for _ in range(9):
        run_steps(poller, 12)
        delays.append(reader.replan_at - clock["now"])
        clock["now"] = reader.replan_at
    assert delays[:3] == [REPLAN_MIN, 2 * REPLAN_MIN, 4 * REPLAN_MIN]
    assert max(delays) == REPLAN_MAX
    assert hub.meters["M2"].status == AVAILABLE and hub.meters["M2"].values["VolLocPhsA"] > 200


def test_silent_meter_turns_unavailable_then_back():
    silent = {"on": True}

    def mangle(request, reply):
        return None if silent["on"] else reply

    poller, hub, _, _ = make_poller({1: "sdm630"}, mangle, max_failures=3, retries=5,
                                    reprobe_min=0.01, reprobe_max=0.02)
    run_steps(poller, 3)
    assert hub.meters["M1"].status == UNAVAILABLE
    assert hub.meters["M1"].errors["timeout"] == 3
    silent["on"] = False
    for _ in range(20):
        poller.step()
        if hub.meters["M1"].status == AVAILABLE:
            break
    assert hub.meters["M1"].status == AVAILABLE


def test_nan_from_the_meter_is_published_as_none():
    poller, hub, meters, _ = make_poller({2: "sdm120"})
    meters[2].physics.values["VolLocPhsA"] = float("nan")
    meters[2].physics.sample = lambda: meters[2].physics.values
    run_steps(poller, len(poller.readers[0].blocks))
    assert hub.meters["M2"].values["VolLocPhsA"] is None
    assert b'"Voltage":{"L1":null' in hub.meters["M2"].readings_json()


def test_meter_refusing_its_whole_table_is_given_up_not_crashed():
    model = lookup("sdm120")
    wrong = MeterModel(**{**model.__dict__, "address_space": ((4, 0x1000, 0x1100),)})
    poller, hub, meters, line = make_poller({2: "sdm120"}, reprobe_min=0.01, reprobe_max=0.02)
    meters[2].model = wrong
    run_steps(poller, 40)
    assert hub.meters["M2"].status == UNAVAILABLE
    assert poller.readers[0].blocks, "the table is asked for again once the meter answers"
    meters[2].model = model
    for _ in range(40):
        poller.step()
    assert hub.meters["M2"].status == AVAILABLE


def test_a_bug_in_one_step_does_not_end_polling(monkeypatch):
    poller, hub, _, _ = make_poller({1: "sdm630"})
    sleeps = []
    poller.sleep = sleeps.append
    calls = {"n": 0}
    real_step = poller.step

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug")
        if calls["n"] > 6:
            poller.stop()
        real_step()

    poller.step = flaky_step
    poller.run()
    assert sleeps[:1] == [1.0]
    assert hub.meters["M1"].requests >= 5
