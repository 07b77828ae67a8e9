"""sdm.doctor on recorded frame sequences: a fake RS485 line with virtual meters (the simulator's)
and one fault at a time, each named by its diagnosis; the verdict on single replies; the capture."""

import io
import random
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from umodbus.client.serial.redundancy_check import add_crc

from sdm.cli.doctor import from_status
from sdm.config import MeterConfig
from sdm.doctor import OK, OVERLAP, Doctor, Exchange, Recording, classify, diagnose, format_report, report
from sdm.framing import rtu
from sdm.hub import Hub
from sdm.meters.registry import lookup
from sdm.pcap import INBOUND, LINKTYPE_USER0, OUTBOUND, PcapWriter
from sdm.status import status
from sdm.transport import COMSETS
from simulator.cli import build_meters
from simulator.server import answer

CHAR = COMSETS[2].char_time
WATCH = 3.0


class FakeBus:
    """A line to virtual meters whose replies arrive a few ms after the request, with one fault:

    ``master``: another master's request frame every 0.3 s; ``twin``: a second meter at that id answers
    too, a few characters later (the replies overlap); ``noise``: each reply byte is hit with this
    probability; ``parity``: every reply byte is mangled (a wrong line setting); ``quiet``: that id
    ignores a request that comes within 30 ms of another meter's reply.
    """

    char_time = CHAR

    def __init__(self, devices, master=False, twin=None, noise=0.0, parity=False, quiet=None, seed=1):
        self.meters = build_meters(devices, seed, [])
        self.twins = build_meters(devices, seed + 99, []) if twin else {}
        self.twin, self.noise, self.parity, self.quiet = twin, noise, parity, quiet
        self.rng = random.Random(seed)
        self.pending = []                 # (due, bytes)
        self.next_stray = time.monotonic() + 0.3 if master else None
        self.last_reply = (None, 0.0)     # (id, when it ended)

    def clear_input(self):
        self.pending.clear()

    def settle(self, quiet, limit):
        self.pending.clear()

    def write(self, data):
        now = time.monotonic()
        slave = data[0]
        reply = answer(self.meters, data)
        if reply is None or (slave == self.quiet and self.last_reply[0] not in (None, slave)
                             and now - self.last_reply[1] < 0.03):
            return
        wire = self._disturb(data, reply)
        due = now + len(data) * CHAR + 0.002
        self.pending.append((due, wire))
        self.last_reply = (slave, due + len(wire) * CHAR)

    def _disturb(self, request, reply):
        rng = self.rng
        if self.parity:
            return bytes(b ^ rng.randrange(1, 256) if rng.random() < 0.5 else b for b in reply)
        if request[0] == self.twin:
            other = answer(self.twins, request)
            shift = rng.randint(0, 3)
            merged = bytearray(reply + b"\xff" * shift)
            for i, byte in enumerate(other):
                merged[i + shift] &= byte
            return bytes(merged)
        return bytes(b ^ (1 << rng.randrange(8)) if rng.random() < self.noise else b for b in reply)

    def read(self, size, deadline):
        while True:
            now = time.monotonic()
            if self.next_stray is not None and now >= self.next_stray:
                self.next_stray = now + 0.3
                self.pending.append((now, add_crc(bytes([9, 3, 0, 0, 0, 2]))))
            ready = [p for p in self.pending if p[0] <= now]
            if ready:
                due, data = ready[0]
                self.pending.remove(ready[0])
                if len(data) > size:
                    self.pending.insert(0, (due, data[size:]))
                return data[:size]
            if now >= deadline:
                return b""
            wake = min([deadline] + [p[0] for p in self.pending]
                       + ([self.next_stray] if self.next_stray is not None else []))
            time.sleep(max(0.0, min(wake - now, 0.05)))


def meters_of(devices):
    from sdm.meters.registry import parse_device_list
    return [MeterConfig(device_id=i, type_name=t, model=m, name=f"m{i}") for t, m, i in parse_device_list(devices)]


def watch(devices="sdm630:1,sdm120:2", **faults):
    recording = Doctor(FakeBus(devices, **faults), meters_of(devices)).watch(WATCH)
    return recording, diagnose(recording)


def codes(findings):
    return [f.code for f in findings]


def test_a_clean_bus_has_no_problem():
    recording, findings = watch()
    assert findings == [] and len(recording.exchanges) > 30
    result = report(recording, findings)
    assert result["Verdict"] == "no problem found" and "No problem found." in format_report(result)
    assert all(m["ReadingsPerSecond"] > 0 and m["TurnaroundMs"]["p50"] is not None for m in result["Meters"])


def test_another_master_is_named():
    _, findings = watch(master=True)
    assert "another_master" in codes(findings)
    assert "another master" in findings[0].text


def test_wrong_parity_is_named_and_no_other_cause():
    _, findings = watch(parity=True)
    assert codes(findings) == ["comset"]
    assert "--try-comsets" in findings[0].text


def test_the_fitting_comset_is_named_when_tried():
    recording, _ = watch(parity=True)
    findings = diagnose(recording, {2: [], 5: [1, 2]})
    assert "9600 8E1 (-c 5)" in findings[0].text


def test_two_meters_sharing_an_id_are_named():
    _, findings = watch(twin=2)
    assert codes(findings) == ["duplicate_id"]
    assert "share id 2" in findings[0].text


def test_noise_grows_with_reply_length_and_is_named():
    _, findings = watch(noise=0.004)
    assert codes(findings) == ["noise"]


def test_a_meter_that_needs_quiet_after_another_meters_traffic_is_named():
    _, findings = watch(quiet=2)
    assert codes(findings) == ["needs_pause"]
    assert "id 2" in findings[0].text


def test_learner_trials_are_not_held_against_the_bus():
    exchanges = [Exchange(i * 0.1, 1, 9, b"", "timeout", None, trial=True) for i in range(10)]
    exchanges += [Exchange(1 + i * 0.1, 1, 9, b"x" * 9, OK, 0.01) for i in range(30)]
    recording = Recording(meters_of("sdm630:1"), CHAR, 4.0, exchanges)
    assert diagnose(recording) == []


def request(slave=1, count=2):
    return rtu.build_request(slave, 4, 0, count)


def good_reply(slave=1, words=(1, 2)):
    return add_crc(struct.pack(f">BBB{len(words)}H", slave, 4, 2 * len(words), *words))


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20), st.data())
def test_classify_good_damaged_and_overlapping_replies(words, data):
    req, reply = request(count=len(words)), good_reply(words=words)
    assert classify(req, reply) == OK
    index = data.draw(st.integers(3, len(reply) - 1))
    damaged = bytearray(reply)
    damaged[index] ^= data.draw(st.integers(1, 255))
    assert classify(req, bytes(damaged)) == "crc"
    assert classify(req, reply + data.draw(st.binary(min_size=1, max_size=9))) == OVERLAP
    assert classify(req, reply[:data.draw(st.integers(3, len(reply) - 1))]) == "short"


def test_classify_other_verdicts():
    assert classify(request(), b"") == "timeout"
    assert classify(request(), good_reply(slave=5)) == "foreign"
    assert classify(request(), add_crc(bytes([1, 0x84, 2]))) == "exception"
    assert classify(request(), good_reply(words=(1, 2, 3))) == "malformed"


def read_pcapng(raw: bytes):
    """An independent reader of what the capture must be: pcapng blocks per the spec
    (section header, one interface, enhanced packets with flags and comment options)."""
    blocks, offset = [], 0
    while offset < len(raw):
        kind, length = struct.unpack_from("<II", raw, offset)
        assert length % 4 == 0 and struct.unpack_from("<I", raw, offset + length - 4)[0] == length
        blocks.append((kind, raw[offset + 8:offset + length - 4]))
        offset += length
    assert blocks[0][0] == 0x0A0D0D0A and struct.unpack_from("<I", blocks[0][1])[0] == 0x1A2B3C4D
    assert blocks[1][0] == 1 and struct.unpack_from("<H", blocks[1][1])[0] == LINKTYPE_USER0
    packets = []
    for kind, body in blocks[2:]:
        assert kind == 6
        _, high, low, caplen, _ = struct.unpack_from("<IIIII", body)
        data = body[20:20 + caplen]
        options, pos, found = body[20 + caplen + (-caplen % 4):], 0, {}
        while True:
            code, size = struct.unpack_from("<HH", options, pos)
            if code == 0:
                break
            found[code] = options[pos + 4:pos + 4 + size]
            pos += 4 + size + (-size % 4)
        packets.append(((high << 32 | low) / 1e6, data, struct.unpack("<I", found[2])[0], found[1].decode()))
    return packets


def test_capture_holds_every_frame_with_time_direction_and_verdict():
    stream = io.BytesIO()
    writer = PcapWriter(stream)
    devices = "sdm120:2"
    Doctor(FakeBus(devices, master=True), meters_of(devices), on_frame=writer.frame).watch(1.0)
    packets = read_pcapng(stream.getvalue())
    requests = [p for p in packets if p[2] == OUTBOUND]
    replies = [p for p in packets if p[2] == INBOUND and p[3] == OK]
    strays = [p for p in packets if p[3].startswith("stray")]
    assert requests and replies and strays
    assert all(rtu.crc_ok(p[1]) for p in requests + replies)
    assert all(abs(p[0] - time.time()) < 60 for p in packets)
    assert [p[0] for p in packets] == sorted(p[0] for p in packets)


def test_the_meters_of_a_running_gateways_status():
    from sdm.bus import bus_state_of
    from sdm.config import BusConfig
    meters = (MeterConfig(device_id=1, type_name="SDM630", model=lookup("sdm630"), name="house", bus="cab"),
              MeterConfig(device_id=26, type_name="JANITZA", model=lookup("janitza"), name="pv", bus="cab"))
    bus = BusConfig(name="cab", port="/dev/ttyUSB1", baud=19200, parity="E", meters=meters)
    found = from_status(status(Hub(meters, [bus_state_of(bus)])), None)
    assert (found.port, found.baud, found.parity) == ("/dev/ttyUSB1", 19200, "E")
    assert [(m.device_id, m.model.key, m.name) for m in found.meters] == [(1, "sdm630", "house"), (26, "janitza", "pv")]
    with pytest.raises(ValueError, match="not a gateway"):
        from_status({"Buses": "x"}, None)


@given(st.lists(st.tuples(st.floats(1e9, 2e9), st.binary(min_size=1, max_size=300), st.booleans(),
                          st.text(min_size=1, max_size=40)), max_size=20))
def test_any_frames_read_back_from_the_capture(frames):
    stream = io.BytesIO()
    writer = PcapWriter(stream)
    for timestamp, data, inbound, verdict in frames:
        writer.frame(timestamp, data, inbound, verdict)
    packets = read_pcapng(stream.getvalue())
    assert [(p[1], p[2], p[3]) for p in packets] == [
        (data, INBOUND if inbound else OUTBOUND, verdict) for _, data, inbound, verdict in frames]
    assert all(abs(p[0] - f[0]) < 1e-5 for p, f in zip(packets, frames))
