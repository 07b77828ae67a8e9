"""pymodbus as an independent server: ``python -m tests.e2e.pymodbus_meters LINK`` on a serial
line, or ``... tcp HOST PORT`` as a Modbus TCP gateway, ``... rtu+tcp HOST PORT`` as a transparent
RTU-over-TCP one (its RTU framer on a TCP socket).

Holds an SDM630 at id 1, a Janitza B23 at id 26 and a DZG at id 36 with the
values of EXPECTED, at addresses written out by hand from docs/registers.md and
encoded here with struct (not with sdm.encoding).
"""

import asyncio
import struct
import sys

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# SDM630, FC 04, float32): address -> value
SDM630 = {0x0000: 231.5, 0x0002: 229.25, 0x0004: 233.75, 0x0006: 1.5, 0x0008: 2.25, 0x000A: 3.125,
          0x000C: 330.5, 0x000E: -480.25, 0x0010: 700.0, 0x001E: 0.95, 0x0020: -0.875, 0x0022: 0.5,
          0x0034: 550.25, 0x0046: 49.96875, 0x0048: 1234.5, 0x004A: 321.25,
          0x00EA: 1.25, 0x00EC: 2.5, 0x00EE: 3.75, 0x00F8: 2.5,
          0x015A: 400.5, 0x015C: 500.25, 0x015E: 333.75, 0x0160: 10.5, 0x0162: 20.25, 0x0164: 290.5}
# Janitza, FC 03, float32; energies in Wh)
JANITZA = {19000: 230.5, 19002: 231.5, 19004: 232.5, 19012: 4.5, 19014: 5.5, 19016: 6.5,
           19020: 1000.5, 19022: 1100.5, 19024: -1200.5, 19026: 900.5, 19044: 0.5, 19046: 0.75, 19048: -0.25,
           19050: 50.03125, 19062: 1500.0, 19064: 2500.0, 19066: 3500.0, 19068: 7500.0,
           19070: 100.0, 19072: 200.0, 19074: 300.0, 19076: 600.0}
# DZG, FC 03, uint32 raw counts)
DZG = {0x0000: 12345, 0x0002: 678, 0x0004: 23012, 0x0006: 22987, 0x0008: 23101, 0x000A: 1234,
       0x000C: 2345, 0x000E: 3456, 0x0010: 987, 0x0012: 50012,
       0x4000: 1234567, 0x4020: 400001, 0x4040: 400002, 0x4060: 434564,
       0x4100: 7654, 0x4120: 1000, 0x4140: 2000, 0x4160: 4654}


def float_words(value):
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def uint_words(value):
    return list(struct.unpack(">HH", struct.pack(">I", value)))


def block(start, size, values, to_words):
    words = [0] * size
    for address, value in values.items():
        if start <= address < start + size:
            words[address - start:address - start + 2] = to_words(value)
    return SimData(start, values=words, datatype=DataType.REGISTERS)


def unused():
    """pymodbus wants every table non-empty: a register far from any the gateway reads."""
    return [SimData(0xF000, values=[0], datatype=DataType.REGISTERS)]


def no_bits():
    return [SimData(0, values=[False], datatype=DataType.BITS)]


def devices():
    sdm = SimDevice(1, (no_bits(), no_bits(), unused(), [block(0, 0x180, SDM630, float_words)]))
    janitza = SimDevice(26, (no_bits(), no_bits(), [block(19000, 78, JANITZA, float_words)], unused()))
    dzg_blocks = [block(0, 0x14, DZG, uint_words)] + [
        block(address, 2, DZG, uint_words) for address in DZG if address >= 0x4000]
    dzg = SimDevice(36, (no_bits(), no_bits(), dzg_blocks, unused()))
    return [sdm, janitza, dzg]


async def serve(port):
    server = ModbusSerialServer(devices(), framer=FramerType.RTU, port=port, baudrate=9600)
    await server.serve_forever()


TCP_FRAMERS = {"tcp": FramerType.SOCKET, "rtu+tcp": FramerType.RTU}


async def serve_tcp(kind, host, port):
    server = ModbusTcpServer(devices(), framer=TCP_FRAMERS[kind], address=(host, port))
    await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 4:
        asyncio.run(serve_tcp(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(serve(sys.argv[1]))
