"""sdm.configure in-process: virtual meters on a fake bus that knows which baud rate each
request is sent at, so a meter set to another rate does not hear it."""

import io
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdm.configure import (
    OK,
    REFUSED,
    ConfigError,
    Configurator,
    MeterSilent,
    Reach,
    Session,
    parse_changes,
    target,
    write_frame,
)
from sdm.meters import registry
from sdm.meters.model import AT_ONCE
from sdm.meters.registry import lookup
from sdm.transport import COMSETS
from simulator.meters import LineSetting, VirtualMeter
from simulator.physics import Physics
from tests.fakes import FrozenClock, MeterLine, virtual_meters

C1, C2 = COMSETS[1], COMSETS[2]          # 2400 8N1, 9600 8N1
WRITABLE = [lookup(key) for key in ("sdm120", "sdm230", "sdm630")]


class Bus:
    """Opens a MeterLine per line setting over the same meters, counting writes."""

    def __init__(self, meters, mangle=None):
        self.meters = meters
        self.mangle = mangle
        self.opened = []

    def open_line(self, comset):
        line = MeterLine(self.meters, self.mangle, baud=comset.baud)
        self.opened.append(comset)
        return line


def tool(meters, mangle=None):
    out = io.StringIO()
    bus = Bus(meters, mangle)
    return Configurator(Session(bus.open_line, timeout=0.01, pause=0.0), "/dev/ttyX", out), out


FACTORY = LineSetting(2400, "N1")      # a current SDM120 out of the box


def sdm120(slave=1, set_mode=True, at=FACTORY):
    model = lookup("sdm120")
    return {slave: VirtualMeter(model, slave, Physics(model.phases, seed=slave, clock=FrozenClock()),
                                line=at, set_mode=set_mode)}


# --- parsing: only documented settings, codes and ranges ---

@given(st.sampled_from(WRITABLE), st.data())
def test_every_documented_choice_parses_to_its_code_and_back(model, data):
    setting = data.draw(st.sampled_from([s for s in model.settings if s.writable]))
    if setting.codes:
        code, meaning = data.draw(st.sampled_from(setting.codes))
    else:
        code = data.draw(st.integers(setting.low, setting.high))
        meaning = str(code)
    (change,) = parse_changes(model, [f"{setting.key}={meaning}"])
    assert change.code == code
    frame = write_frame(9, change)
    assert setting.stored([int.from_bytes(frame[7:9], "big"), int.from_bytes(frame[9:11], "big")]) == code


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=248)))
def test_ids_outside_1_to_247_are_refused(number):
    with pytest.raises(ConfigError, match="broadcast|out of range|not a number"):
        parse_changes(lookup("sdm120"), [f"id={number}"])


@pytest.mark.parametrize("model,items,message", [
    ("sdm120", ["id=0"], "broadcast"),
    ("sdm120", ["baud=19200"], "has no baud rate '19200' .*1200, 2400, 4800, 9600"),
    ("sdm630", ["baud=57600"], "has no baud rate"),
    ("sdm120", ["parity=X"], "has no parity"),
    ("sdm120", ["speed=9600"], "no setting 'speed'"),
    ("sdm120", ["id=7", "id=8"], "given twice"),
    ("sdm120", ["id"], "not NAME=VALUE"),
    ("sdm120", [], "nothing to set"),
    ("sdm220", ["id=7"], "documents no setting as writable .* set-up menu"),
    ("janitza", ["id=7"], "documents no setting as writable .* buttons"),
    ("dzg", ["baud=9600"], "documents no setting as writable"),
])
def test_undocumented_or_invalid_settings_are_refused(model, items, message):
    with pytest.raises(ConfigError, match=message):
        parse_changes(lookup(model), items)


def test_a_line_setting_sdm_cannot_speak_is_refused():
    reach = Reach(1, C2)
    with pytest.raises(ConfigError, match="odd parity.*out of its reach"):
        target(reach, parse_changes(lookup("sdm120"), ["parity=O"]))
    with pytest.raises(ConfigError, match="4800 8N1 is not in sdm's -c table"):
        target(reach, parse_changes(lookup("sdm120"), ["baud=4800"]))
    assert target(reach, parse_changes(lookup("sdm630"), ["id=9", "baud=19200", "parity=E"])) == Reach(9, COMSETS[6])


# --- show ---

def test_show_decodes_identity_and_settings_into_words():
    configurator, out = tool(sdm120(1))
    assert configurator.show(Reach(1, C1)) == OK
    text = out.getvalue()
    assert text.startswith("Eastron SDM120 at id 1 at 2400 8N1 (-c 1)\n")
    assert "meter code               0x0020" in text
    assert "serial number            26000001" in text
    assert "MODBUS id                1 " in text and "2400 baud" in text and "no parity, 1 stop bit" in text
    assert "writable over MODBUS in set mode, takes effect after a power cycle" in text
    assert "set mode: hold its button" in text


def test_show_of_a_model_without_documented_registers_names_the_front_panel():
    configurator, out = tool(virtual_meters({26: "janitza"}))
    assert configurator.show(Reach(26, C2), "janitza") == OK
    assert "changed on the meter's buttons" in out.getvalue()


def test_an_unproven_model_needs_type_and_a_contradicting_type_is_refused():
    configurator, _ = tool(virtual_meters({3: "sdm230", 1: "sdm630"}))
    with pytest.raises(ConfigError, match="not proven: name it with --type"):
        configurator.show(Reach(3, C2))
    with pytest.raises(ConfigError, match="says it is an Eastron SDM630, not an Eastron SDM120"):
        configurator.show(Reach(1, C2), "sdm120")


def test_a_silent_id_says_so():
    configurator, _ = tool(sdm120(1))
    with pytest.raises(MeterSilent, match="no answer at id 1 at 9600 8N1"):
        configurator.show(Reach(1, C2))        # the meter is at 2400


# --- set ---

def test_set_in_set_mode_stores_and_waits_for_the_power_cycle():
    meters = sdm120(1)
    configurator, out = tool(meters)
    asked = []
    result = configurator.set(Reach(1, C1), ["id=7", "baud=9600"], confirm=lambda q: asked.append(q) or True)
    assert result == OK, out.getvalue()
    meter = meters[1]
    assert meter.stored == {"id": 7, "baud": 2, "parity": 0} and meter.pending and meter.slave == 1
    text = out.getvalue()
    assert "MODBUS id: 1 -> 7" in text and "baud rate: 2400 baud -> 9600 baud" in text
    assert asked == ["Write 2 setting(s) to the meter at id 1 at 2400 8N1 (-c 1)? [y/N] "]
    assert "Stored, not yet in effect" in text and "afterwards at id 7 at 9600 8N1 (-c 2)" in text
    assert "sdm_config -s /dev/ttyX -c 2 show 7" in text
    meter.power_cycle()
    check, _ = tool({7: meter})
    assert check.show(Reach(7, C2)) == OK
    with pytest.raises(MeterSilent):
        check.show(Reach(7, C1))


def test_outside_set_mode_the_refusal_is_recognised_and_nothing_changes():
    meters = sdm120(1, set_mode=False)
    configurator, out = tool(meters)
    assert configurator.set(Reach(1, C1), ["id=7"], confirm=lambda q: True) == REFUSED
    assert "refuses writes outside its set mode" in out.getvalue() and "Nothing was written." in out.getvalue()
    assert meters[1].stored["id"] == 1 and not meters[1].pending


def test_an_id_another_device_answers_to_is_refused_before_any_write():
    meters = sdm120(1, at=LineSetting(9600, "N1"))
    meters.update(virtual_meters({7: "sdm630"}))
    configurator, _ = tool(meters)
    with pytest.raises(ConfigError, match="another device already answers at id 7 at 9600 8N1"):
        configurator.set(Reach(1, C2), ["id=7"], confirm=lambda q: True)
    assert meters[1].stored["id"] == 1


def test_dry_run_prints_the_frames_and_writes_nothing():
    meters = sdm120(1)
    configurator, out = tool(meters)
    assert configurator.set(Reach(1, C1), ["id=7", "parity=E"], dry_run=True) == OK
    text = out.getvalue()
    assert "01 10 00 14 00 02 04 40 e0 00 00 e7 66   MODBUS id = 7" in text
    assert "01 10 00 12 00 02 04 3f 80 00 00" in text
    assert meters[1].stored["id"] == 1


def test_no_confirmation_writes_nothing():
    meters = sdm120(1)
    configurator, out = tool(meters)
    assert configurator.set(Reach(1, C1), ["id=7"], confirm=lambda q: False) == REFUSED
    assert meters[1].stored["id"] == 1 and "Nothing written." in out.getvalue()


def test_settings_already_held_are_not_written():
    configurator, out = tool(sdm120(1))
    assert configurator.set(Reach(1, C1), ["id=1", "baud=2400"], confirm=lambda q: pytest.fail("asked")) == OK
    assert "nothing to write" in out.getvalue()


def test_a_write_without_a_clean_answer_tells_how_to_reach_the_meter():
    def drop_writes(request, reply):
        return None if request[1] == 0x10 else reply

    meters = sdm120(1)
    configurator, out = tool(meters, drop_writes)
    assert configurator.set(Reach(1, C1), ["id=7", "baud=9600"], confirm=lambda q: True) == REFUSED
    text = out.getvalue()
    assert "may or may not have taken it" in text
    assert "try its old settings (id 1 at 2400 8N1 (-c 1)) and its new ones (id 7 at 9600 8N1 (-c 2))" in text
    assert "sdm_detect -s /dev/ttyX --comset all" in text


def test_a_change_that_applies_at_once_is_followed_to_the_new_id(monkeypatch):
    """A model whose table says "at once": the second write goes to the new id, the read-back too."""
    meters = sdm120(1)
    model = meters[1].model
    meters[1].model = replace(model, settings=tuple(replace(s, applies=AT_ONCE) for s in model.settings))
    monkeypatch.setitem(registry.MODELS, "sdm120", meters[1].model)
    configurator, out = tool(meters)
    assert configurator.set(Reach(1, C1), ["id=9", "baud=9600"], confirm=lambda q: True) == OK, out.getvalue()
    assert "Done: the meter answers at id 9 at 9600 8N1 (-c 2)" in out.getvalue()
    assert 9 in meters and meters[9].line == LineSetting(9600, "N1")


def test_a_meter_that_applies_at_once_but_is_documented_otherwise_is_not_lost():
    """The table says "after a power cycle" but the meter switches at once: the next write goes
    unanswered, and the user is told both places to look."""
    meters = sdm120(1)
    meters[1].model = replace(meters[1].model, settings=tuple(
        replace(s, applies=AT_ONCE) for s in meters[1].model.settings))
    configurator, out = tool(meters)
    assert configurator.set(Reach(1, C1), ["id=9", "baud=9600"], confirm=lambda q: True) == REFUSED
    assert "No clean answer to the baud rate write" in out.getvalue()
    assert "its new ones (id 9 at 9600 8N1 (-c 2))" in out.getvalue()
