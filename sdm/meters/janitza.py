"""Janitza B23-312: FC 03 holding registers in the UMG-compatible block from 19000."""

from ..encoding import float32_div
from .model import READ_HOLDING, MeterModel, check_model, registers

# docs/registers.md, Janitza: the rows of both projects, with mbmd's total power and frequency.
MEASUREMENT_ROWS = [
    ("VolLocPhsA", 19000), ("VolLocPhsB", 19002), ("VolLocPhsC", 19004),
    ("AmpLocPhsA", 19012), ("AmpLocPhsB", 19014), ("AmpLocPhsC", 19016),
    ("WLocPhsA", 19020), ("WLocPhsB", 19022), ("WLocPhsC", 19024),
    ("TotW", 19026),
    ("AngLocPhsA", 19044), ("AngLocPhsB", 19046), ("AngLocPhsC", 19048),
    ("Freq", 19050),
]

# docs/registers.md, Janitza: the energy registers hold Wh, so they are divided by
# 1000 to give kWh (gosdm630 published the raw Wh figure as kWh: a bug).
ENERGY_ROWS = [
    ("TotkWhImportPhsA", 19062), ("TotkWhImportPhsB", 19064), ("TotkWhImportPhsC", 19066),
    ("TotkWhImport", 19068),
    ("TotkWhExportPhsA", 19070), ("TotkWhExportPhsB", 19072), ("TotkWhExportPhsC", 19074),
    ("TotkWhExport", 19076),
]

JANITZA = check_model(MeterModel(
    key="janitza",
    manufacturer="Janitza",
    model="B23-312",
    registers=registers(READ_HOLDING, MEASUREMENT_ROWS) + registers(READ_HOLDING, ENERGY_ROWS, float32_div(1000)),
    max_registers=40,   # not documented (docs/registers.md): conservative
    pause=0.020,        # not documented: a short, safe quiet time
    probe="VolLocPhsA",
    # Janitza "MID energy meters" brochure and product manual: B23 direct measurement up to 65 A,
    # 3 x 230/400 V.  (The B24 is the CT-operated sibling: it needs the per-meter override.)
    max_current=65.0,
    nominal_voltage=230.0,
    address_space=((READ_HOLDING, 19000, 19078),),
    # No source we have documents the B23's id, baud rate or parity as MODBUS registers
    # (docs/registers.md, Janitza B23-312): nothing is read or written, the meter's buttons change them.
    front_panel="the meter's buttons (its set-up menu, see the B23 manual)",
))

MODELS = (JANITZA,)
