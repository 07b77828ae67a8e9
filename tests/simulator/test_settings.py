"""Virtual Eastron meters hold their communication settings like the real ones: FC 03 reads,
FC 16 writes with the vendor's rules, set mode, and changes applied by a power cycle."""

import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sdm.framing.rtu import build_request, build_write, crc_ok
from sdm.meters.registry import lookup
from simulator.meters import LineSetting, VirtualMeter, rekey
from simulator.physics import Physics
from simulator.server import FrameFinder, SlaveLoop, answer
from tests.fakes import FrozenClock

FACTORY = LineSetting(2400, "N1")


def meter(key="sdm120", slave=1, set_mode=True, line=FACTORY):
    model = lookup(key)
    return VirtualMeter(model, slave, Physics(model.phases, seed=1, clock=FrozenClock()), line=line,
                        set_mode=set_mode)


def float_words(value):
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def write(meters, slave, address, value):
    return answer(meters, build_write(slave, address, float_words(value)), baud=2400, now=1.0)


def test_settings_are_read_with_fc_03_as_floats():
    meters = {1: meter()}

    def held(address):
        reply = answer(meters, build_request(1, 3, address, 2), baud=2400)
        return struct.unpack(">f", reply[3:7])[0]

    assert (held(0x0012), held(0x0014), held(0x001C)) == (0.0, 1.0, 0.0)    # N1, id 1, 2400
    assert answer(meters, build_request(1, 3, 0x0020, 2), baud=2400)[1:3] == bytes([0x83, 2])
    serial = answer(meters, build_request(1, 3, 0xFC00, 2), baud=2400)
    assert struct.unpack(">I", serial[3:7])[0] == 26000001


def test_a_good_write_is_echoed_and_waits_for_the_power_cycle():
    meters = {1: meter()}
    assert write(meters, 1, 0x0014, 7.0) == build_write(1, 0x0014, [0, 0])[:6] + crc_of(1, 0x0014)
    assert write(meters, 1, 0x001C, 2.0)[1] == 0x10
    assert meters[1].slave == 1 and meters[1].pending
    meters[1].power_cycle()
    rekey(meters)
    assert list(meters) == [7] and meters[7].line == LineSetting(9600, "N1")
    assert answer(meters, build_request(7, 4, 0, 2), baud=2400) is None        # deaf at the old rate
    assert answer(meters, build_request(7, 4, 0, 2), baud=9600)[1] == 4


def crc_of(slave, address):
    from umodbus.client.serial.redundancy_check import get_crc
    return get_crc(struct.pack(">BBHH", slave, 0x10, address, 2))


@pytest.mark.parametrize("address,value,code", [
    (0x0014, 0.0, 3), (0x0014, 248.0, 3), (0x0014, 7.5, 3), (0x0014, float("nan"), 3),
    (0x001C, 3.0, 3),             # 19200: not an SDM120 rate
    (0x0012, 4.0, 3),
    (0x0016, 1.0, 2),             # not a communication setting
    (0x0013, 1.0, 2),             # inside a setting, not at its start
])
def test_bad_addresses_get_02_and_bad_values_03(address, value, code):
    meters = {1: meter()}
    assert write(meters, 1, address, value)[1:3] == bytes([0x90, code])
    assert not meters[1].pending


def test_two_settings_in_one_write_are_refused():
    meters = {1: meter()}
    frame = build_write(1, 0x0012, float_words(1.0) + float_words(7.0))
    assert answer(meters, frame, baud=2400)[1:3] == bytes([0x90, 2])


def test_the_sdm120_refuses_writes_outside_set_mode_and_the_sdm630_needs_none():
    assert write({1: meter(set_mode=False)}, 1, 0x0014, 7.0)[1:3] == bytes([0x90, 1])
    sdm630 = {1: meter("sdm630", set_mode=False, line=LineSetting(2400, "N1"))}
    assert write(sdm630, 1, 0x001C, 3.0)[1] == 0x10


def test_models_without_settings_refuse_writes():
    assert write({26: meter("janitza", 26, line=None)}, 26, 0x0014, 7.0)[1:3] == bytes([0x90, 2])
    assert write({3: meter("sdm220", 3)}, 3, 0x0014, 7.0)[1:3] == bytes([0x90, 2])   # not documented writable


def test_a_meter_without_a_known_line_hears_any_rate_until_a_change_applies():
    meters = {1: meter(line=None)}
    assert answer(meters, build_request(1, 4, 0, 2), baud=19200)[1] == 4
    write(meters, 1, 0x001C, 0.0)         # 2400
    meters[1].power_cycle()
    assert answer(meters, build_request(1, 4, 0, 2), baud=19200) is None


def test_a_signal_power_cycles_every_meter_and_the_loop_finds_it_at_its_new_id():
    class Line:
        written = []

        def write(self, data):
            self.written.append(data)

    meters = {1: meter()}
    loop = SlaveLoop(Line(), meters)
    write(meters, 1, 0x0014, 9.0)
    loop.power_cycle_requested = True
    loop.cycle_due(2.0)
    assert list(meters) == [9] and not meters[9].pending


def test_power_cycle_after_write_waits_its_time():
    meters = {1: meter()}
    loop = SlaveLoop(None, meters, power_cycle_after=0.5)
    write(meters, 1, 0x0014, 9.0)         # written at 1.0
    loop.cycle_due(1.4)
    assert list(meters) == [1]
    loop.cycle_due(1.5)
    assert list(meters) == [9]


@given(st.binary(max_size=30), st.binary(max_size=30), st.integers(1, 247), st.integers(0, 0xFFFF))
def test_write_frames_are_found_behind_any_noise(before, after, slave, word):
    request = build_write(slave, 0x0014, [word, 0])
    stream = before + request + after
    assume(not any(crc_ok(stream[i:i + n]) for i in range(len(before)) for n in (8, 13)))
    assert request in list(FrameFinder().feed(stream, 0.0))
