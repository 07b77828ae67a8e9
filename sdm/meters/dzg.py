"""DZG DVH4013: FC 03 holding registers, unsigned 32-bit integers with a divisor."""

from ..encoding import uint32
from .model import READ_HOLDING, MeterModel, check_model, registers

# docs/registers.md, DZG (mbmd's reading).  Per-phase energies are uint32 / 1000 like the
# totals; gosdm630 decoded them as float32, a bug.
# 0x0014 / 0x0016 (demand) answer exception 02 on real meters: not read.
ROWS = (
    registers(READ_HOLDING, [("TotWImport", 0x0000), ("TotWExport", 0x0002)], uint32(10))
    + registers(READ_HOLDING, [("VolLocPhsA", 0x0004), ("VolLocPhsB", 0x0006), ("VolLocPhsC", 0x0008)], uint32(100))
    + registers(READ_HOLDING, [
        ("AmpLocPhsA", 0x000A), ("AmpLocPhsB", 0x000C), ("AmpLocPhsC", 0x000E),
        ("TotPF", 0x0010), ("Freq", 0x0012),
        ("TotkWhImport", 0x4000),
        ("TotkWhImportPhsA", 0x4020), ("TotkWhImportPhsB", 0x4040), ("TotkWhImportPhsC", 0x4060),
        ("TotkWhExport", 0x4100),
        ("TotkWhExportPhsA", 0x4120), ("TotkWhExportPhsB", 0x4140), ("TotkWhExportPhsC", 0x4160),
    ], uint32(1000))
)

# The instantaneous block answers as a whole; each energy register on its own
# (its neighbours are tariff registers whose behaviour no source documents).
_ENERGY_SPACE = tuple((READ_HOLDING, reg.address, reg.end) for reg in ROWS if reg.address >= 0x4000)

DZG = check_model(MeterModel(
    key="dzg",
    manufacturer="DZG",
    model="DVH4013",
    registers=ROWS,
    max_registers=20,   # not documented (docs/registers.md): conservative
    pause=0.020,        # not documented: a short, safe quiet time
    probe="VolLocPhsA",
    # Unsure: no DVH4013 data sheet with its current rating was at hand (the DZG user manual found
    # does not state it in the part read).  Direct-connected DZG three-phase meters are built for
    # 60 A or 100 A; 100 A is the generous choice.
    max_current=100.0,
    nominal_voltage=230.0,
    address_space=((READ_HOLDING, 0x0000, 0x0014),) + _ENERGY_SPACE,
    # The id comes from the serial number (docs/registers.md, DZG DVH4013) and no source documents line settings
    # as MODBUS registers: nothing is read or written over MODBUS.
    front_panel="the meter itself (its id follows from its serial number; see the DZG manual)",
))

MODELS = (DZG,)
