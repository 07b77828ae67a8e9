"""Eastron SDM120, SDM220, SDM230, SDM530, SDM630 (v1 and v2 share one map).

All values: FC 04 input registers, float32 high word first (docs/registers.md).
"""

from typing import Iterable, Optional, Tuple

from .model import READ_INPUT, Identity, MeterModel, Setting, check_model, registers

# Real Eastron meters answer any input register in this range, with 0 where
# a model has no value (docs/registers.md, conventions); used by the simulator only.
EASTRON_SPACE = ((READ_INPUT, 0x0000, 0x0180),)

# Holding register with the model code, one register, FC 03 (docs/registers.md, detection).
METER_CODE_ADDRESS = 0xFC02

# 60 ms of quiet before the next request: a margin of ours, no Eastron document gives
# a figure (docs/registers.md, the pause).
EASTRON_PAUSE = 0.060

# docs/registers.md, SDM630: SDM630 superset, every row read by mbmd's SDM type (52 values).
SDM630_ROWS = [
    ("VolLocPhsA", 0x0000), ("VolLocPhsB", 0x0002), ("VolLocPhsC", 0x0004),
    ("AmpLocPhsA", 0x0006), ("AmpLocPhsB", 0x0008), ("AmpLocPhsC", 0x000A),
    ("WLocPhsA", 0x000C), ("WLocPhsB", 0x000E), ("WLocPhsC", 0x0010),
    ("VALocPhsA", 0x0012), ("VALocPhsB", 0x0014), ("VALocPhsC", 0x0016),
    ("VArLocPhsA", 0x0018), ("VArLocPhsB", 0x001A), ("VArLocPhsC", 0x001C),
    ("AngLocPhsA", 0x001E), ("AngLocPhsB", 0x0020), ("AngLocPhsC", 0x0022),
    ("TotW", 0x0034), ("TotVA", 0x0038), ("TotVAr", 0x003C),
    ("TotPF", 0x003E), ("TotPhAng", 0x0042),
    ("Freq", 0x0046),
    ("TotkWhImport", 0x0048), ("TotkWhExport", 0x004A),
    ("TotkVArhImport", 0x004C), ("TotkVArhExport", 0x004E),
    ("ThdVolPhsA", 0x00EA), ("ThdVolPhsB", 0x00EC), ("ThdVolPhsC", 0x00EE),
    ("ThdVol", 0x00F8),
    ("TotkWh", 0x0156), ("TotkVArh", 0x0158),
    ("TotkWhImportPhsA", 0x015A), ("TotkWhImportPhsB", 0x015C), ("TotkWhImportPhsC", 0x015E),
    ("TotkWhExportPhsA", 0x0160), ("TotkWhExportPhsB", 0x0162), ("TotkWhExportPhsC", 0x0164),
    ("TotkWhPhsA", 0x0166), ("TotkWhPhsB", 0x0168), ("TotkWhPhsC", 0x016A),
    ("TotkVArhImportPhsA", 0x016C), ("TotkVArhImportPhsB", 0x016E), ("TotkVArhImportPhsC", 0x0170),
    ("TotkVArhExportPhsA", 0x0172), ("TotkVArhExportPhsB", 0x0174), ("TotkVArhExportPhsC", 0x0176),
    ("TotkVArhPhsA", 0x0178), ("TotkVArhPhsB", 0x017A), ("TotkVArhPhsC", 0x017C),
]

# docs/registers.md, SDM120: mbmd's SDM120 map (13 values). The older Eastron SDM120 document
# also lists phase angle 0x0024, the SDM120M v2.5 one does not: not read.
SDM120_ROWS = [
    ("VolLocPhsA", 0x0000), ("AmpLocPhsA", 0x0006), ("WLocPhsA", 0x000C),
    ("VALocPhsA", 0x0012), ("VArLocPhsA", 0x0018), ("AngLocPhsA", 0x001E),
    ("Freq", 0x0046), ("TotkWhImport", 0x0048), ("TotkWhExport", 0x004A),
    ("TotkVArhImport", 0x004C), ("TotkVArhExport", 0x004E),
    ("TotkWh", 0x0156), ("TotkVArh", 0x0158),
]

# docs/registers.md, SDM230 and SDM220: mbmd's maps (the SDM120 set plus phase angle, 14 values).
SDM220_ROWS = SDM120_ROWS[:6] + [("PhAngPhsA", 0x0024)] + SDM120_ROWS[6:]

# docs/registers.md, SDM530 (gosdm630's capability table: V, I, P, PF per phase, total import
# and export) on the SDM630 layout, plus frequency, which
# that layout has at the same address.
SDM530_ROWS = SDM630_ROWS[0:9] + SDM630_ROWS[15:18] + [
    ("Freq", 0x0046), ("TotkWhImport", 0x0048), ("TotkWhExport", 0x004A),
]


# --- Communication settings and identity (holding registers, float32, FC 03 / FC 16) ---
#
# Sources.  [P120] Eastron SDM120 Modbus protocol (v2.4/v2.5, "SDM120M"), [P230] Eastron SDM230
# Modbus protocol v1.1-v1.4, [P630] Eastron SDM630 Modbus protocol v1.8 / v2.0: the vendor tables,
# read here through their transcriptions in nmakel/sdm_modbus (src/sdm_modbus/sdm.py, which ships
# the PDFs in documents/) and, for the SDM120, gianfrdp/SDM120C (sdm120c.c).  [P72] the SDM72D-M
# protocol / manual text (B+G e-tech V1.5, SPC v1.1), the one vendor text read verbatim: parity
# codes, id range, "Function code 10 is used to write", "write only one parameter per message".
# Every Eastron document lists each parameter as one float32 in two registers, high word first.

# 0x0012 network parity and stop bits [P72, P120, P230, P630]: 0 = no parity, 1 stop bit (default);
# 1 = even, 1 stop; 2 = odd, 1 stop; 3 = no parity, 2 stop bits.
PARITY_CODES = ((0, "N1"), (1, "E1"), (2, "O1"), (3, "N2"))
PARITY_ADDRESS = 0x0012
# 0x0014 network node (the MODBUS id), 1-247, default 1 [P72, P120, P230, P630].
ID_ADDRESS = 0x0014
# 0x001C network baud rate code.  SDM120 and SDM230: 0 = 2400, 1 = 4800, 2 = 9600, 5 = 1200
# [P120, P230; gianfrdp's BR1200..BR9600].  SDM630: 0-4 = 2400, 4800, 9600, 19200, 38400 [P630].
# The older SDM120 document lists rates up to 38400; the v2.5 one only up to 9600: the newer,
# narrower list is used (a code the meter rejects would leave it unchanged, a code it takes
# but we mis-decode would lose it).
BAUD_ADDRESS = 0x001C
BAUD_CODES_SINGLE_PHASE = ((5, "1200"), (0, "2400"), (1, "4800"), (2, "9600"))
BAUD_CODES_SDM630 = ((0, "2400"), (1, "4800"), (2, "9600"), (3, "19200"), (4, "38400"))

# When a change takes effect: the sources do not agree.  gianfrdp's sdm120c first restarted the
# meter after writing the id or the baud rate and later stopped doing so; peninquen's configSDM120
# says some parameters need the meter restarted; the Eastron tables carry no clear word per model.
# The safe reading for a user is "after a power cycle": nothing is claimed before it, and the
# verification reads at the old settings first and tries the new ones when the old stay silent.


def _comms(baud_codes: Tuple[Tuple[int, str], ...], writable: bool) -> Tuple[Setting, ...]:
    return (
        Setting("id", "MODBUS id", ID_ADDRESS, low=1, high=247, writable=writable),
        Setting("baud", "baud rate", BAUD_ADDRESS, codes=baud_codes, writable=writable),
        Setting("parity", "parity and stop bits", PARITY_ADDRESS, codes=PARITY_CODES, writable=writable),
    )


# Identity: 0xFC02 meter code (one register) [P120 v2.4/v2.5; docs/registers.md, conventions];
# 0xFC00 serial number, uint32 [P120, P230, P630 via nmakel]; 0xFC03 software version, two
# registers [P120 via nmakel; its encoding is not documented clearly, so it is shown raw].
CODE_ID = Identity("meter_code", "meter code", METER_CODE_ADDRESS, 1, "hex")
SERIAL_ID = Identity("serial", "serial number", 0xFC00, 2, "uint32")
FIRMWARE_ID = Identity("firmware", "firmware (raw registers)", 0xFC03, 2, "words")

EASTRON_PANEL = ("the meter's set-up menu (see its manual); models without buttons for it can only "
                 "be changed over MODBUS")


def _eastron(key: str, model: str, rows: Iterable[Tuple[str, int]], max_registers: int, phases: int,
             max_current: float, meter_code: Optional[int] = None, settings: Tuple[Setting, ...] = (),
             identity: Tuple[Identity, ...] = (), set_mode: bool = False) -> MeterModel:
    return check_model(MeterModel(
        key=key,
        manufacturer="Eastron",
        model=model,
        registers=registers(READ_INPUT, rows),
        max_registers=max_registers,
        pause=EASTRON_PAUSE,
        probe="VolLocPhsA",
        phases=phases,
        max_current=max_current,
        nominal_voltage=230.0,
        meter_code=meter_code,
        address_space=EASTRON_SPACE,
        settings=settings,
        identity=identity,
        set_mode=set_mode,
        front_panel=EASTRON_PANEL,
    ))


# Limits (docs/registers.md): SDM630, SDM120: 80; SDM230: use 60.
# SDM220 and SDM530 have no documented limit: 40, the conservative choice.
# Meter codes (docs/registers.md, detection; none documented for SDM220, SDM230, SDM530).
# Settings: SDM630, SDM230 and SDM120 document them as r/w holding registers.  The SDM120
# takes the writes only in its set mode (its button held about 3 s: peninquen's configSDM120,
# the reaper7/SDM_Energy_Meter#36 report).  No vendor document for the SDM220 was available:
# gianfrdp's tool reads and writes it like the SDM120, so the registers are read, never written.
# The SDM530 has no document here at all: no settings.
# Ratings (Imax per phase, nominal 230 V L-N): SDM630-Modbus V2 user manual v1.5, "100A direct
# connection"; SDM530-MT user manual v1.5, 100 A direct; SDM230 series manual, Ib 10 A / Imax 100 A;
# SDM120-Modbus data sheet, Ib 5 A / Imax 45 A.  SDM220: no data sheet at hand; the SDM220-Modbus is
# sold as 10(100) A, so 100 A, the generous figure.  The CT-operated variants (SDM630MCT, SDM120CT,
# SDM530CT) answer with the same map but report primary currents behind any CT ratio: those need the
# per-meter override of sdm.sanity (their rating here would be far too low).
SDM630 = _eastron("sdm630", "SDM630", SDM630_ROWS, 80, 3, 100.0, meter_code=0x0070,
                  settings=_comms(BAUD_CODES_SDM630, True), identity=(CODE_ID, SERIAL_ID))
SDM530 = _eastron("sdm530", "SDM530", SDM530_ROWS, 40, 3, 100.0)
SDM230 = _eastron("sdm230", "SDM230", SDM220_ROWS, 60, 1, 100.0,
                  settings=_comms(BAUD_CODES_SINGLE_PHASE, True), identity=(SERIAL_ID,))
SDM220 = _eastron("sdm220", "SDM220", SDM220_ROWS, 40, 1, 100.0, settings=_comms(BAUD_CODES_SINGLE_PHASE, False))
SDM120 = _eastron("sdm120", "SDM120", SDM120_ROWS, 80, 1, 45.0, meter_code=0x0020,
                  settings=_comms(BAUD_CODES_SINGLE_PHASE, True),
                  identity=(CODE_ID, SERIAL_ID, FIRMWARE_ID), set_mode=True)

MODELS = (SDM120, SDM220, SDM230, SDM530, SDM630)
