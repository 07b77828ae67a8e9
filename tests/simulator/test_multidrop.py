"""The virtual multi-drop bus: bytes reach every other station at the line rate; overlaps garble."""

import threading
import time

import pytest

from sdm.framing.rtu import build_request
from simulator.multidrop import InternalLine, Wire, parse_master

CHAR = 10 / 9600


@pytest.fixture
def wire():
    line = Wire(CHAR)
    runner = threading.Thread(target=line.run, daemon=True)
    runner.start()
    yield line
    line.running = False


def collect(line: InternalLine, seconds: float) -> bytes:
    received = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        received += line.read(0.02)
    return received


def test_a_frame_reaches_every_other_station_after_its_wire_time(wire):
    a, b, c = (InternalLine(wire, name) for name in "abc")
    request = build_request(1, 4, 0, 2)
    began = time.monotonic()
    wire.transmit(a.me, request, began)
    assert b.read(1.0) == request
    assert time.monotonic() - began >= len(request) * CHAR * 0.9
    assert collect(c, 0.1) == request and collect(a, 0.05) == b""      # never back to its sender
    assert wire.counts()["sent"] == {"a": len(request), "b": 0, "c": 0} and wire.collisions == 0


def test_two_senders_at_once_garble_each_other(wire):
    a, b, c = (InternalLine(wire, name) for name in "abc")
    first, second = build_request(1, 4, 0, 2), build_request(2, 3, 0x10, 4)
    now = time.monotonic()
    wire.transmit(a.me, first, now)
    wire.transmit(b.me, second, now + 2 * CHAR)
    heard = collect(c, 0.2)
    assert wire.collisions == 1
    assert first not in heard and second not in heard


def test_the_master_option_names_type_id_and_rate():
    model, slave, rate = parse_master("sdm630:1@14")
    assert (model.key, slave, rate) == ("sdm630", 1, 14.0)
    for bad in ("sdm630", "sdm630:0@14", "nope:1@14", "sdm630:1@0"):
        with pytest.raises(ValueError, match="--master"):
            parse_master(bad)
