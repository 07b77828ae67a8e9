"""pymodbus as an independent serial server holding Eastron setting registers:
``python -m tests.e2e.pymodbus_settings LINK LOG``.

An SDM630 at id 1 and an SDM230 at id 4, each with the holding registers of
its vendor table written out here by hand (float32 high word first, packed
with struct, not with sdm.encoding): 0x0012 parity/stop code, 0x0014 id,
0x001C baud-rate code, 0xFC00 serial number, and for the SDM630 0xFC02 its
meter code.  pymodbus stores what is written; every request that touches the
holding registers is logged to LOG as a JSON line with the registers pymodbus
holds at that moment, so a test can check pymodbus's own store.
"""

import asyncio
import functools
import json
import struct
import sys

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

SETTINGS_START = 0x0012
SETTINGS_SIZE = 12                  # 0x0012 .. 0x001D


def float_words(value):
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def settings_block(parity_code, meter_id, baud_code):
    words = [0] * SETTINGS_SIZE
    words[0:2] = float_words(parity_code)        # 0x0012
    words[2:4] = float_words(meter_id)           # 0x0014
    words[10:12] = float_words(baud_code)        # 0x001C
    return SimData(SETTINGS_START, values=words, datatype=DataType.REGISTERS)


def identity_block(serial, meter_code):
    return SimData(0xFC00, values=[serial >> 16, serial & 0xFFFF, meter_code, 0, 0], datatype=DataType.REGISTERS)


def bits():
    return [SimData(0, values=[False], datatype=DataType.BITS)]


def voltage():
    """Input register 0 (L1 voltage), so that a bus scan accepts the meter."""
    return [SimData(0, values=float_words(230.5) + [0] * 6, datatype=DataType.REGISTERS)]


DOCUMENTED = (0x0012, 0x0013, 0x0014, 0x0015, 0x001C, 0x001D)


async def record(log, slave, function_code, start_address, address, count, current_registers, set_values):
    """pymodbus's action hook: log holding-register traffic with what its store holds at the
    documented setting addresses (before this request's own write is applied)."""
    if function_code in (3, 16):
        held = {a: current_registers[a - start_address] for a in DOCUMENTED
                if 0 <= a - start_address < len(current_registers)}
        log.write(json.dumps({"slave": slave, "fc": function_code, "address": address, "count": count,
                              "values": list(set_values) if set_values is not None else None,
                              "held": held}) + "\n")
        log.flush()
    return None


IDS = (1, 4)


def silent_for_missing(sending, data):
    """A missing id stays silent, as on a real bus.  pymodbus 3.16's simulator answers it with
    exception 4 (ignore_missing_devices does not reach its SimDevice store), so that answer is dropped."""
    return b"" if sending and data and data[0] not in IDS else data


def devices(log):
    sdm630 = SimDevice(1, (bits(), bits(), [settings_block(0, 1, 2), identity_block(70000001, 0x0070)], voltage()),
                       action=functools.partial(record, log, 1))
    sdm230 = SimDevice(4, (bits(), bits(), [settings_block(0, 4, 2), identity_block(23000004, 0)], voltage()),
                       action=functools.partial(record, log, 4))
    return [sdm630, sdm230]


async def serve(port, log_path):
    with open(log_path, "a", encoding="utf-8") as log:
        server = ModbusSerialServer(devices(log), framer=FramerType.RTU, port=port, baudrate=9600,
                                    trace_packet=silent_for_missing)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
