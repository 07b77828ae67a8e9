"""pymodbus as an independent gateway (Modbus TCP, and its RTU framer on a TCP socket), loaded
with known values at the reference addresses, read correctly through make_link + exchange +
sdm's own planning and decoding.  And each, spoken to in the wrong framing, is named."""

import socket

import pytest

from sdm.framing import make_link, rtu
from sdm.framing.gateway import HINT_USE_RTU, HINT_USE_TCP
from sdm.meters.registry import lookup
from sdm.plan import plan
from sdm.poller import decode_block
from sdm.transport import TransportError
from tests.e2e import pymodbus_meters as peer
from tests.support import Process, free_port, python_cmd, wait_until

TIMEOUT = 0.5


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def pymodbus_gateways(tmp_path_factory):
    """pymodbus serving the same meters as a Modbus TCP and as a transparent gateway: kind -> port."""
    ports, servers = {}, []
    for kind in ("tcp", "rtu+tcp"):
        port = free_port()
        log = tmp_path_factory.mktemp("pymodbus") / f"{kind}.log"
        server = Process(python_cmd("tests.e2e.pymodbus_meters", kind, "127.0.0.1", str(port)), log)
        server.spawn()
        servers.append(server)
        wait_until(lambda p=port, s=server: accepts(p) or s.proc.poll() is not None, 15, what=f"pymodbus {kind}")
        assert server.proc.poll() is None, server.log()
        ports[kind] = port
    yield ports
    for server in servers:
        server.stop()


def read_meter(link, type_name: str, slave: int):
    """Every value of a meter, requested in the blocks the poller plans, decoded as it decodes."""
    model = lookup(type_name)
    values = {}
    for block in plan(model.registers, model.max_registers):
        values.update(decode_block(block, link.exchange(slave, block.fc, block.start, block.count, TIMEOUT)))
    return model, values


def expected(model, table):
    """The peer's values by measurement name, for the registers the peer holds."""
    return {reg.name: pytest.approx(table[reg.address] / reg.encoding.divisor)
            for reg in model.registers if reg.address in table}


@pytest.mark.parametrize("kind", ["tcp", "rtu+tcp"])
def test_pymodbus_gateway_is_read_with_sdm_planning_and_decoding(pymodbus_gateways, kind):
    link = make_link(f"{kind}://127.0.0.1:{pymodbus_gateways[kind]}")
    link.open()
    try:
        for type_name, slave, table in (("sdm630", 1, peer.SDM630), ("janitza", 26, peer.JANITZA)):
            model, values = read_meter(link, type_name, slave)
            want = expected(model, table)
            assert len(want) >= 20
            assert {name: values[name] for name in want} == want
        assert link.exchange(1, 4, 0x0000, 2, TIMEOUT) == peer.float_words(231.5)
        with pytest.raises(rtu.ExceptionReply):
            link.exchange(1, 4, 0x0400, 2, TIMEOUT)       # outside the peer's table
        assert link.hint is None
    finally:
        link.close()


@pytest.mark.parametrize("kind, wrong, hint", [("tcp", "rtu+tcp", HINT_USE_TCP), ("rtu+tcp", "tcp", HINT_USE_RTU)])
def test_pymodbus_gateway_in_the_other_mode_is_named(pymodbus_gateways, kind, wrong, hint):
    link = make_link(f"{wrong}://127.0.0.1:{pymodbus_gateways[kind]}")
    link.open()
    try:
        for _ in range(6):
            try:
                registers = link.exchange(1, 4, 0x0000, 2, 0.1)
            except rtu.ModbusError:
                pass
            except TransportError:
                link.close()
                link.open()
            else:
                pytest.fail(f"the wrong framing gave registers {registers}")
            if link.hint:
                break
        assert link.hint == hint
    finally:
        link.close()
