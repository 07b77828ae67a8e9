"""The simulator's network gateways: Modbus TCP (--tcp) and transparent RTU over TCP (--rtu-tcp),
read by pymodbus as an independent client and by make_link; faults, pacing, latency, the CLI."""

import os
import struct
import threading
import time

import gevent
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient

from sdm.encoding import decode
from sdm.framing import make_link, rtu
from sdm.framing.mbap import MbapLink
from sdm.framing.rtu import RtuLink
from sdm.meters.registry import MODELS
from sdm.transport import comset
from sdm.transport.serial import SerialTransport
from sdm.transport.tcp import TcpTransport
from simulator.faults import FaultInjector
from simulator.pacing import Pacing
from simulator.server import register_reply
from simulator.tcp import GatewayServer, MbapFramer, NotModbusTcp, SimBus, mbap_reply, usable_reply
from tests.fakes import virtual_meters
from tests.support import Process, python_cmd, wait_until
from tests.tcp_support import mbap, mbap_registers

DEVICES = {n: key for n, key in enumerate(sorted(MODELS), start=1)}
PYMODBUS_FRAMERS = {"tcp": FramerType.SOCKET, "rtu+tcp": FramerType.RTU}


def test_framer_cuts_frames_split_and_joined_anyhow():
    one, two = mbap(1, 1, bytes.fromhex("04 00 00 00 02")), mbap(2, 26, bytes.fromhex("03 4a 38 00 4e"))
    stream, found = one + two, []
    framer = MbapFramer()
    for piece in (stream[:3], stream[3:9], stream[9:20], stream[20:]):
        found += list(framer.feed(piece))
    assert found == [(1, 1, bytes.fromhex("04 00 00 00 02")), (2, 26, bytes.fromhex("03 4a 38 00 4e"))]


@pytest.mark.parametrize("header", [mbap(1, 1, b"\x04", protocol=1), mbap(1, 1, b"", length=1)])
def test_framer_refuses_what_is_no_mbap(header):
    with pytest.raises(NotModbusTcp):
        list(MbapFramer().feed(header))


@given(st.integers(0, 0xFFFF), st.integers(1, 247), st.sampled_from([3, 4]),
       st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125))
def test_a_meter_reply_becomes_the_mbap_reply(tid, slave, fc, words):
    request = rtu.build_request(slave, fc, 0, len(words))
    reply = register_reply(slave, fc, words)
    assert usable_reply(request, reply)
    assert mbap_reply(tid, reply) == mbap_registers(tid, slave, fc, words)


def test_replies_a_gateway_cannot_use_are_dropped():
    request = rtu.build_request(1, 4, 0, 2)
    good = register_reply(1, 4, [1, 2])
    for bad in (None, b"", good[:-1], good[:-1] + bytes([good[-1] ^ 1]), register_reply(2, 4, [1, 2]),
                b"\x01\x02" + good, good + good):
        assert not usable_reply(request, bad)


@pytest.fixture
def served():
    """Factory: one simulated gateway in this process (threads), every model at ids 1..7."""
    servers = []

    def start(kind, pacing=None, latency=0.0, disturb=None, meters=None):
        bus = SimBus(meters or virtual_meters(DEVICES), [], 7, disturb, threading.Lock(), pacing, latency)
        servers.append(GatewayServer(kind, "127.0.0.1:0", bus).start())
        return servers[-1], bus.meters

    yield start
    for server in servers:
        server.stop()


def expected_value(meter, reg):
    expected, resolution = meter.physics.values[reg.name], 0.0
    if reg.encoding.kind == "uint32":     # an unsigned count: resolution 1 / divisor, never below 0
        expected, resolution = max(expected, 0.0), 0.5 / reg.encoding.divisor
    return pytest.approx(expected, rel=1e-6, abs=resolution)


@pytest.mark.parametrize("kind", ["tcp", "rtu+tcp"])
def test_pymodbus_client_decodes_what_the_physics_holds(served, kind):
    server, meters = served(kind)
    client = ModbusTcpClient("127.0.0.1", port=server.port, framer=PYMODBUS_FRAMERS[kind], timeout=2, retries=0)
    assert client.connect()
    try:
        for slave, meter in meters.items():
            for reg in meter.model.registers:
                read = client.read_input_registers if reg.fc == 4 else client.read_holding_registers
                result = read(reg.address, count=2, device_id=slave)
                assert not result.isError(), (kind, slave, reg)
                kind_of = client.DATATYPE.FLOAT32 if reg.encoding.kind == "float32" else client.DATATYPE.UINT32
                value = client.convert_from_registers(result.registers, data_type=kind_of, word_order="big")
                assert value / reg.encoding.divisor == expected_value(meter, reg), (kind, meter.model.key, reg.name)
        outside = client.read_input_registers(0x0200, count=2, device_id=next(
            s for s, m in meters.items() if m.model.key == "sdm630"))
        assert outside.isError() and outside.exception_code == 2
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["tcp", "rtu+tcp"])
def test_make_link_reads_every_model(served, kind):
    server, meters = served(kind)
    link = make_link(server.url)
    link.open()
    try:
        for slave, meter in meters.items():
            for reg in meter.model.registers:
                words = link.exchange(slave, reg.fc, reg.address, reg.width, 0.5)
                assert decode(words, reg.encoding) == expected_value(meter, reg), (kind, meter.model.key, reg.name)
        with pytest.raises(rtu.NoReply):
            link.exchange(200, 4, 0, 2, 0.05)      # nobody at 200: silence, on either kind
    finally:
        link.close()


@pytest.mark.parametrize("kind", ["tcp", "rtu+tcp"])
def test_several_connections_at_once(served, kind):
    server, meters = served(kind)
    sdm630 = next(s for s, m in meters.items() if m.model.key == "sdm630")
    want = struct.unpack(">HH", struct.pack(">f", meters[sdm630].physics.values["VolLocPhsA"]))
    links = [make_link(server.url) for _ in range(3)]
    results = []

    def poll(link):
        link.open()
        try:
            results.extend(tuple(link.exchange(sdm630, 4, 0, 2, 0.5)) for _ in range(10))
        finally:
            link.close()

    workers = [gevent.spawn(poll, link) for link in links]
    gevent.joinall(workers, timeout=20, raise_error=True)
    assert results == [want] * 30


def test_modbus_tcp_drops_what_the_meter_garbled_and_passes_exceptions(served):
    meters = virtual_meters({1: "sdm630"})
    injector = FaultInjector(meters, {"crc": 0.5, "exception": 0.5}, seed=3)
    server, _ = served("tcp", disturb=injector, meters=meters)
    link = MbapLink(TcpTransport(server.url))      # the bare framing: no watch on the connection
    link.open()
    kinds = []
    try:
        for _ in range(20):
            try:
                link.exchange(1, 4, 0, 2, 0.05)
                kinds.append("ok")
            except rtu.ModbusError as err:
                kinds.append(err.kind)
    finally:
        link.close()
    assert kinds.count("timeout") == injector.counts["crc"] and kinds.count("exception") == injector.counts["exception"]
    assert sorted(set(kinds)) == ["exception", "timeout"]


@pytest.mark.parametrize("kind", ["tcp", "rtu+tcp"])
def test_replies_take_the_serial_time_and_the_gateway_latency(served, kind):
    line = comset(1)       # 2400 8N1: a reply of 2 registers costs 9 ms of request and 38 ms of reply
    server, _ = served(kind, pacing=Pacing(line.char_time), latency=0.1, meters=virtual_meters({1: "sdm630"}))
    link = make_link(server.url, line.baud, line.parity)
    link.open()
    try:
        link.exchange(1, 4, 0, 2, 1.0)            # connection warm
        started = time.monotonic()
        link.exchange(1, 4, 0, 2, 1.0)
        took = time.monotonic() - started
    finally:
        link.close()
    least = 0.1 + line.char_time * (8 + 9)
    assert least <= took < least + 0.5


def simulator_process(tmp_path, name, *flags):
    port_file = tmp_path / f"{name}.ports"
    proc = Process(python_cmd("simulator", "-d", "sdm630:1,janitza:26", "--seed", "7", "--port-file",
                              str(port_file), *flags), tmp_path / f"{name}.log")
    proc.spawn()
    wait_until(lambda: port_file.exists() or proc.proc.poll() is not None, 15, what="simulator port file")
    assert proc.proc.poll() is None, proc.log()
    return proc, port_file.read_text().split()


def test_simulators_side_by_side_on_pty_and_tcp(tmp_path):
    """Two simulators, each with a pty and both gateways; every one is read."""
    started = []
    try:
        urls = []
        for name in ("a", "b"):
            proc, ports = simulator_process(tmp_path, name, "--link", str(tmp_path / f"{name}.tty"),
                                            "--tcp", "127.0.0.1:0", "--rtu-tcp", "127.0.0.1:0")
            started.append(proc)
            assert [url.split("://")[0] for url in ports] == ["tcp", "rtu+tcp"]
            urls += ports
            wait_until(lambda n=name: os.path.exists(tmp_path / f"{n}.tty"), 10, what="pty link")
        assert len(set(urls)) == 4
        links = [make_link(url) for url in urls]
        links += [RtuLink(SerialTransport(str(tmp_path / f"{n}.tty"), comset(2))) for n in ("a", "b")]
        for link in links:
            link.open()
            try:
                volts = decode(link.exchange(1, 4, 0, 2, 0.5), MODELS["sdm630"].register("VolLocPhsA").encoding)
                assert 200 < volts < 260, link.port
                assert link.exchange(26, 3, 19000, 2, 0.5)
            finally:
                link.close()
    finally:
        for proc in started:
            assert proc.stop() == 0
    assert "listening on 127.0.0.1:" in started[0].log()


@pytest.mark.parametrize("flags, message", [
    ([], "give --link, --tcp or --rtu-tcp"),
    (["--tcp", "127.0.0.1"], "no port given"),
    (["--rtu-tcp", "::1:5020"], "brackets"),
    (["--tcp", "127.0.0.1:0", "--unplug", "1-2"], "needs --link"),
    (["--tcp", "127.0.0.1:0", "--gateway-latency-ms", "-1"], "must not be negative"),
])
def test_bad_gateway_options_exit_2_with_a_message(capsys, flags, message):
    from simulator.cli import main
    assert main(["-d", "sdm630:1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_exits_2(capsys):
    from simulator.cli import main
    blocker = GatewayServer("tcp", "127.0.0.1:0", SimBus({}, [], None, None, threading.Lock()))
    try:
        assert main(["-d", "sdm630:1", "--tcp", f"127.0.0.1:{blocker.port}"]) == 2
    finally:
        blocker.stop()
    assert "sdm_simulator:" in capsys.readouterr().err
