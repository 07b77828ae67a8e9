"""FC 16 write frames written out by hand from the Eastron setting tables (sdm/meters/eastron.py
cites them): holding register 0x0014 id, 0x001C baud-rate code, 0x0012 parity/stop code, each
one float32 in two registers, high word first, written alone (one parameter per message).

Each row: type, slave, NAME=VALUE, the full request ADU (slave, 0x10, address, count 2,
byte count 4, the float's four bytes, CRC low byte first).  The floats by hand:
7.0 = 40 e0 00 00, 2.0 = 40 00 00 00, 1.0 = 3f 80 00 00, 3.0 = 40 40 00 00, 5.0 = 40 a0 00 00.
"""

import pytest

from sdm.configure import parse_changes, write_frame
from sdm.meters.registry import lookup
from tests.sdm.meters.test_golden_frames import modbus_crc

GOLDEN_WRITES = [
    ("sdm120", 2, "id=7", "02 10 00 14 00 02 04 40 e0 00 00 e8 22"),
    ("sdm120", 2, "baud=9600", "02 10 00 1c 00 02 04 40 00 00 00 e8 72"),      # code 2
    ("sdm120", 2, "baud=1200", "02 10 00 1c 00 02 04 40 a0 00 00 e8 50"),      # code 5
    ("sdm120", 2, "parity=E", "02 10 00 12 00 02 04 3f 80 00 00 71 c2"),       # code 1: even, 1 stop
    ("sdm230", 4, "id=7", "04 10 00 14 00 02 04 40 e0 00 00 f6 aa"),
    ("sdm230", 4, "baud=9600", "04 10 00 1c 00 02 04 40 00 00 00 f6 fa"),
    ("sdm230", 4, "parity=E", "04 10 00 12 00 02 04 3f 80 00 00 6f 4a"),
    ("sdm630", 1, "id=7", "01 10 00 14 00 02 04 40 e0 00 00 e7 66"),
    ("sdm630", 1, "baud=9600", "01 10 00 1c 00 02 04 40 00 00 00 e7 36"),
    ("sdm630", 1, "baud=19200", "01 10 00 1c 00 02 04 40 40 00 00 e6 e2"),     # code 3, SDM630 only
    ("sdm630", 1, "parity=E", "01 10 00 12 00 02 04 3f 80 00 00 7e 86"),
]

@pytest.mark.parametrize("type_name,slave,assignment,frame", GOLDEN_WRITES)
def test_write_frame_matches_the_vendor_table(type_name, slave, assignment, frame):
    expected = bytes.fromhex(frame)
    assert modbus_crc(expected[:-2]) == expected[-2:], "the hand-written frame itself is wrong"
    (change,) = parse_changes(lookup(type_name), [assignment])
    assert write_frame(slave, change) == expected

def test_identity_registers_match_the_reference():
    """0xFC02 meter code (one register), 0xFC00 serial number (two), 0xFC03 firmware (SDM120)."""
    sdm120 = {item.key: (item.address, item.count) for item in lookup("sdm120").identity}
    assert sdm120 == {"meter_code": (0xFC02, 1), "serial": (0xFC00, 2), "firmware": (0xFC03, 2)}
    assert {item.key for item in lookup("sdm630").identity} == {"meter_code", "serial"}

def test_only_documented_models_have_writable_settings():
    writable = {key for key in ("sdm120", "sdm220", "sdm230", "sdm530", "sdm630", "janitza", "dzg")
                if any(s.writable for s in lookup(key).settings)}
    assert writable == {"sdm120", "sdm230", "sdm630"}
    assert lookup("sdm120").set_mode and not lookup("sdm630").set_mode
    assert not lookup("janitza").settings and not lookup("dzg").settings
