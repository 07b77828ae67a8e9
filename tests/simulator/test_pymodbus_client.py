"""pymodbus, as an independent client, reads our simulator on a real pty and
decodes the values the simulator's physics holds, for every meter type."""

import gevent
import pytest
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient

from sdm.meters.registry import MODELS
from simulator.line import PtyLine
from simulator.server import SlaveLoop
from tests.fakes import virtual_meters

DEVICES = {n: key for n, key in enumerate(sorted(MODELS), start=1)}


@pytest.fixture
def served(tmp_path):
    meters = virtual_meters(DEVICES)
    line = PtyLine(str(tmp_path / "tty"))
    loop = SlaveLoop(line, meters)
    worker = gevent.spawn(loop.serve_forever)
    client = ModbusSerialClient(str(tmp_path / "tty"), framer=FramerType.RTU, baudrate=9600, timeout=1, retries=0)
    assert client.connect()
    yield client, meters
    client.close()
    loop.running = False
    worker.join(timeout=2)
    line.close()


def pymodbus_value(client, reg, slave):
    read = client.read_input_registers if reg.fc == 4 else client.read_holding_registers
    result = read(reg.address, count=2, device_id=slave)
    assert not result.isError(), (slave, reg)
    kind = client.DATATYPE.FLOAT32 if reg.encoding.kind == "float32" else client.DATATYPE.UINT32
    return client.convert_from_registers(result.registers, data_type=kind, word_order="big") / reg.encoding.divisor


def test_pymodbus_decodes_what_the_physics_holds(served):
    client, meters = served
    for slave, meter in meters.items():
        physics = meter.physics.values
        for reg in meter.model.registers:
            expected, resolution = physics[reg.name], 0.0
            if reg.encoding.kind == "uint32":   # an unsigned count: resolution 1 / divisor, never below 0
                expected, resolution = max(expected, 0.0), 0.5 / reg.encoding.divisor
            assert pymodbus_value(client, reg, slave) == pytest.approx(expected, rel=1e-6, abs=resolution), (
                meter.model.key, reg.name)


def test_simulator_answers_like_a_meter(served):
    client, meters = served
    sdm630 = next(s for s, m in meters.items() if m.model.key == "sdm630")
    outside = client.read_input_registers(0x0200, count=2, device_id=sdm630)
    too_many = client.read_input_registers(0, count=82, device_id=sdm630)
    code = client.read_holding_registers(0xFC02, count=1, device_id=sdm630)
    assert outside.isError() and outside.exception_code == 2
    assert too_many.isError() and too_many.exception_code == 3
    assert code.registers == [0x0070]
