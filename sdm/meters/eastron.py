"""Eastron SDM120, SDM220, SDM230, SDM530, SDM630 (v1 and v2 share one map).

All values: FC 04 input registers, float32 high word first (docs/registers.md).
"""

from .model import READ_INPUT, MeterModel, check_model, registers

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


def _eastron(key: str, model: str, rows, max_registers: int, phases: int, meter_code=None) -> MeterModel:
    return check_model(MeterModel(
        key=key,
        manufacturer="Eastron",
        model=model,
        registers=registers(READ_INPUT, rows),
        max_registers=max_registers,
        pause=EASTRON_PAUSE,
        probe="VolLocPhsA",
        phases=phases,
        meter_code=meter_code,
        address_space=EASTRON_SPACE,
    ))


# Limits (docs/registers.md): SDM630, SDM120: 80; SDM230: use 60.
# SDM220 and SDM530 have no documented limit: 40, the conservative choice.
# Meter codes (docs/registers.md, detection; none documented for SDM220, SDM230, SDM530).
SDM630 = _eastron("sdm630", "SDM630", SDM630_ROWS, 80, 3, meter_code=0x0070)
SDM530 = _eastron("sdm530", "SDM530", SDM530_ROWS, 40, 3)
SDM230 = _eastron("sdm230", "SDM230", SDM220_ROWS, 60, 1)
SDM220 = _eastron("sdm220", "SDM220", SDM220_ROWS, 40, 1)
SDM120 = _eastron("sdm120", "SDM120", SDM120_ROWS, 80, 1, meter_code=0x0020)

MODELS = (SDM120, SDM220, SDM230, SDM530, SDM630)
