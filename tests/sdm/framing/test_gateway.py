"""Links to TCP gateways (make_link): connection faults, the dead-connection watch, the mode hint.

Each fault gets its error kind and never a wrong value: refused, dropped
mid-reply, half-open (TransportError after three silent requests, then a
reconnect works), a stale reply, a reply for another unit, and a gateway in
the wrong mode both ways (recognised from its bytes, or probed after the
silence).  Scripted servers play the gateways; the simulator's gateways play
the wrong-mode ones.
"""

import socket
import struct
import threading

import pytest
from umodbus.client.serial.redundancy_check import add_crc

from sdm.framing import make_link, rtu
from sdm.framing.gateway import HINT_USE_RTU, HINT_USE_TCP, GatewayLink, holds_rtu_frame, looks_like_mbap
from sdm.transport import TransportError
from sdm.transport.serial import SerialTransport
from sdm.transport.tcp import TCP_ROUND_TRIP, TcpTransport
from simulator.tcp import GatewayServer, SimBus
from tests.fakes import virtual_meters
from tests.tcp_support import FakeGateway, hold_open, mbap_registers, rtu_registers
from tests.tcp_support import mbap as mbap_frame

TIMEOUT = 0.05
WORDS = {1: [0x4367, 0x8000], 2: [0x4248, 0x0000], 26: [0x3F80, 0x0000]}


def test_make_link_builds_each_kind():
    serial = make_link("/dev/ttyUSB0", 2400, "E")
    assert isinstance(serial, rtu.RtuLink) and isinstance(serial.transport, SerialTransport)
    assert serial.kind == "serial" and serial.hint is None
    assert serial.cost.char_time == pytest.approx(11 / 2400)
    transparent = make_link("rtu+tcp://127.0.0.1:8899", 19200, "E")
    assert isinstance(transparent, GatewayLink) and isinstance(transparent.transport, TcpTransport)
    assert (transparent.kind, transparent.port, transparent.hint) == ("rtu+tcp", "rtu+tcp://127.0.0.1:8899", None)
    assert transparent.cost.char_time == pytest.approx(11 / 19200)
    assert (transparent.cost.silence_chars, transparent.cost.round_trip) == (3.5, TCP_ROUND_TRIP)
    modbus_tcp = make_link("tcp://127.0.0.1")
    assert modbus_tcp.kind == "tcp" and modbus_tcp.transport.tcp_port == 502
    assert (modbus_tcp.cost.silence_chars, modbus_tcp.cost.round_trip) == (0.0, TCP_ROUND_TRIP)
    assert not modbus_tcp.is_open


@pytest.mark.parametrize("args, message", [
    (("udp://127.0.0.1:502",), "unknown scheme"),
    (("rtu+tcp://127.0.0.1",), "no standard port"),
    (("tcp://[::1",), "IPv6"),
    (("/dev/ttyUSB0", 0), "baud rate"),
    (("/dev/ttyUSB0", 9600, "O"), "parity"),
    (("tcp://127.0.0.1", 9600, "N", -1.0), "connect timeout"),
])
def test_make_link_refuses_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        make_link(*args)


def parse_rtu(request: bytes):
    """(slave, fc) of a CRC-valid 8-byte read request, else None."""
    return (request[0], request[1]) if len(request) == 8 and rtu.crc_ok(request) else None


def parse_mbap(request: bytes):
    """(tid, unit, fc) of a 12-byte MBAP read request, else None."""
    if len(request) != 12:
        return None
    tid, protocol, length, unit, fc = struct.unpack(">HHHBB", request[:8])
    return (tid, unit, fc) if protocol == 0 and length == 6 else None


class Gateway:
    """A scripted gateway that speaks one framing and answers the units in ``words``.

    ``hang_first``: the first connection accepts and never answers (half-open).
    ``before``: bytes sent ahead of each real MBAP reply, made from (tid, unit, fc).
    """

    def __init__(self, kind, words=None, hang_first=False, before=None, cut=None, unit_shift=0):
        self.kind = kind
        self.words = WORDS if words is None else words
        self.hang_first = hang_first
        self.before = before
        self.cut = cut
        self.unit_shift = unit_shift
        self.fake = FakeGateway(self.script)
        self.url = self.fake.url(kind)

    def script(self, conn, index):
        if self.hang_first and index == 0:
            while self.fake.read(conn, 64, timeout=10):
                pass
            return
        size = 8 if self.kind == "rtu+tcp" else 12
        while True:
            request = self.fake.read(conn, size)
            if len(request) < size:
                return
            reply = self.reply(request)
            if reply and self.cut:
                conn.sendall(reply[:self.cut])
                conn.close()
                return
            if reply:
                conn.sendall(reply)

    def reply(self, request):
        if self.kind == "rtu+tcp":
            parsed = parse_rtu(request)
            if parsed and parsed[0] in self.words:
                return rtu_registers(parsed[0] + self.unit_shift, parsed[1], self.words[parsed[0]])
            return None
        parsed = parse_mbap(request)
        if not parsed or parsed[1] not in self.words:
            return None
        tid, unit, fc = parsed
        ahead = self.before(tid, unit, fc) if self.before else b""
        return ahead + mbap_registers(tid, unit + self.unit_shift, fc, self.words[unit])


@pytest.fixture
def gateway():
    made = []

    def start(kind, **options):
        made.append(Gateway(kind, **options))
        return made[-1]

    yield start
    for gw in made:
        gw.fake.close()


@pytest.fixture
def link():
    links = []

    def connect(url):
        links.append(make_link(url, connect_timeout=2.0))
        links[-1].open()
        return links[-1]

    yield connect
    for made in links:
        made.close()


KINDS = ["rtu+tcp", "tcp"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_good_gateway_is_read(gateway, link, kind):
    gw = gateway(kind)
    bus = link(gw.url)
    assert bus.exchange(1, 4, 0, 2, TIMEOUT) == WORDS[1]
    assert bus.exchange(26, 3, 19000, 2, TIMEOUT) == WORDS[26]


@pytest.mark.parametrize("kind", KINDS)
def test_refused(kind):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    bus = make_link(f"{kind}://127.0.0.1:{port}")
    with pytest.raises(TransportError, match="refused"):
        bus.open()
    assert not bus.is_open


@pytest.mark.parametrize("kind", KINDS)
def test_dropped_mid_reply_is_a_transport_error(gateway, link, kind):
    bus = link(gateway(kind, cut=6).url)
    with pytest.raises(TransportError, match="closed by the gateway"):
        bus.exchange(1, 4, 0, 2, TIMEOUT)


@pytest.mark.parametrize("kind", KINDS)
def test_half_open_connection_is_given_up_after_three_silent_requests_then_reconnects(gateway, link, kind):
    gw = gateway(kind, hang_first=True)
    bus = link(gw.url)
    for _ in range(2):
        with pytest.raises(rtu.NoReply):
            bus.exchange(1, 4, 0, 2, TIMEOUT)
    with pytest.raises(TransportError, match="3 requests in a row"):
        bus.exchange(1, 4, 0, 2, TIMEOUT)
    assert not bus.is_open
    assert bus.hint is None        # the probe in the other framing got no valid reply either
    bus.open()
    assert bus.exchange(1, 4, 0, 2, TIMEOUT) == WORDS[1]


@pytest.mark.parametrize("kind", KINDS)
def test_one_dead_meter_among_live_ones_never_drops_the_connection(gateway, link, kind):
    bus = link(gateway(kind).url)
    assert bus.exchange(1, 4, 0, 2, TIMEOUT) == WORDS[1]
    for _ in range(6):           # retries of a dead meter back to back, live ones idle
        with pytest.raises(rtu.NoReply):
            bus.exchange(7, 4, 0, 2, TIMEOUT)
    assert bus.exchange(2, 4, 0, 2, TIMEOUT) == WORDS[2]
    assert bus.is_open


@pytest.mark.parametrize("kind", KINDS)
def test_every_known_meter_silent_drops_the_connection(gateway, link, kind):
    gw = gateway(kind)
    bus = link(gw.url)
    assert bus.exchange(1, 4, 0, 2, TIMEOUT) == WORDS[1]
    gw.words = {}                # the gateway stops forwarding anything
    for _ in range(2):
        with pytest.raises(rtu.NoReply):
            bus.exchange(1, 4, 0, 2, TIMEOUT)
    with pytest.raises(TransportError):
        bus.exchange(1, 4, 0, 2, TIMEOUT)


@pytest.mark.parametrize("kind", KINDS)
def test_a_scan_of_silent_ids_keeps_the_connection(gateway, link, kind):
    bus = link(gateway(kind).url)
    for slave in range(100, 106):
        with pytest.raises(rtu.NoReply):
            bus.exchange(slave, 3, 0xFC02, 1, TIMEOUT, prompt=True)
    assert bus.is_open and bus.exchange(1, 4, 0, 2, TIMEOUT) == WORDS[1]


def test_a_stale_reply_is_discarded_and_the_real_one_taken(gateway, link):
    stale = lambda tid, unit, fc: mbap_registers((tid - 1) % 0x10000, unit, fc, [0xDEAD, 0xBEEF])  # noqa: E731
    bus = link(gateway("tcp", before=stale).url)
    for _ in range(3):
        assert bus.exchange(1, 4, 0, 2, TIMEOUT) == WORDS[1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_reply_for_another_unit_is_malformed(gateway, link, kind):
    bus = link(gateway(kind, unit_shift=1).url)
    with pytest.raises(rtu.MalformedReply):
        bus.exchange(1, 4, 0, 2, TIMEOUT)
    assert bus.hint is None


@pytest.fixture
def simulated():
    """The simulator's gateways in this process: SDM630 at 1."""
    servers = []

    def start(kind):
        bus = SimBus(virtual_meters({1: "sdm630"}), [], None, None, threading.Lock())
        servers.append(GatewayServer(kind, "127.0.0.1:0", bus).start())
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("start, hint", [(0, HINT_USE_TCP), (0x000C, HINT_USE_TCP)], ids=["silent", "closes"])
def test_rtu_frames_to_a_modbus_tcp_gateway_are_named(simulated, link, start, hint):
    """RTU bytes read as MBAP: start 0 gives protocol id 0 and a unit nobody has (silence);
    any other start gives a protocol id the gateway refuses by closing the connection."""
    url = simulated("tcp").replace("tcp://", "rtu+tcp://")
    bus = link(url)
    errors = []
    for _ in range(3):
        try:
            bus.exchange(1, 4, start, 2, TIMEOUT)
        except TransportError as err:
            errors.append(err)
            bus.close()
            bus.open()
        except rtu.NoReply as err:
            errors.append(err)
    assert len(errors) == 3 and isinstance(errors[-1], TransportError)
    assert bus.hint == hint


def test_mbap_frames_to_a_transparent_gateway_are_named(simulated, link):
    bus = link(simulated("rtu+tcp").replace("rtu+tcp://", "tcp://"))
    for _ in range(2):
        with pytest.raises(rtu.NoReply):
            bus.exchange(1, 4, 0, 2, TIMEOUT)
    with pytest.raises(TransportError):
        bus.exchange(1, 4, 0, 2, TIMEOUT)
    assert bus.hint == HINT_USE_RTU


def test_an_mbap_answer_to_rtu_bytes_is_recognised_at_once(link):
    """A Modbus TCP gateway that answers the RTU request it misread with an MBAP exception."""
    def modbus_tcp(conn, _):
        while True:
            request = fake.read(conn, 8)
            if len(request) < 8:
                return
            # our 8 bytes as MBAP: tid = slave, fc; length 2: unit = CRC low, function = CRC high
            conn.sendall(mbap_frame(struct.unpack(">H", request[:2])[0], request[6], bytes([request[7] | 0x80, 1])))

    fake = FakeGateway(modbus_tcp)
    try:
        bus = link(fake.url("rtu+tcp"))
        with pytest.raises(rtu.MalformedReply):
            bus.exchange(1, 4, 0, 2, TIMEOUT)
        assert bus.hint == HINT_USE_TCP and bus.is_open
    finally:
        fake.close()


def test_an_rtu_answer_to_mbap_bytes_is_recognised_at_once(link):
    def transparent(conn, _):
        fake.read(conn, 12)
        conn.sendall(rtu_registers(1, 4, WORDS[1]))
        hold_open(conn)

    fake = FakeGateway(transparent)
    try:
        bus = link(fake.url("tcp"))
        with pytest.raises(rtu.ModbusError):
            bus.exchange(1, 4, 0, 2, TIMEOUT)
        assert bus.hint == HINT_USE_RTU
    finally:
        fake.close()


def test_a_good_reply_clears_the_hint(gateway, link):
    bus = link(gateway("tcp").url)
    bus.hint = HINT_USE_RTU
    assert bus.exchange(1, 4, 0, 2, TIMEOUT) == WORDS[1]
    assert bus.hint is None


@pytest.mark.parametrize("data, expected", [
    (mbap_frame(0x0104, 0x71, bytes([0xCB, 1])), True),
    (mbap_frame(0x0104, 0x71, bytes([0xCB, 1]))[:-1], False),          # incomplete
    (mbap_frame(0x0104, 0x71, bytes([0xCB, 1]), protocol=3), False),
    (rtu_registers(1, 4, [0, 0]), False),                           # a good RTU reply is no MBAP
    (b"", False),
])
def test_looks_like_mbap(data, expected):
    assert looks_like_mbap(data) is expected


@pytest.mark.parametrize("data, expected", [
    (rtu_registers(1, 4, [1, 2]), True),
    (add_crc(bytes([1, 0x84, 2])), True),
    (rtu_registers(1, 4, [1, 2])[:-1], False),
    (rtu_registers(0, 4, [1, 2]), False),
    (mbap_registers(1, 1, 4, [1, 2]), False),
])
def test_holds_rtu_frame(data, expected):
    assert holds_rtu_frame(data) is expected
