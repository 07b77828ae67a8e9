"""The Readings object: gosdm630's keys and order, nulls for what a meter lacks."""

import json
import math

from sdm.measurements import CATALOGUE
from sdm.readings import LAYOUT, ZERO_TIME, dumps, layout_names, readings


def test_every_measurement_has_exactly_one_place():
    names = layout_names()
    assert sorted(names) == sorted(CATALOGUE)


def test_gosdm630_keys_come_first_in_order():
    keys = list(readings("Instrument1", 1, 0, {}))
    assert keys[:14] == ["UniqueId", "Timestamp", "Unix", "ModbusDeviceId", "Power", "Voltage", "Current",
                         "Cosphi", "Import", "TotalImport", "Export", "TotalExport", "THD", "Frequency"]
    assert [k for k, _ in LAYOUT][:10] == keys[4:14]


def test_values_land_in_the_right_phase():
    obj = readings("M", 1, 1538733601.5, {"WLocPhsA": 1.0, "WLocPhsB": 2.0, "WLocPhsC": 3.0, "ThdVol": 1.5,
                                          "ThdVolPhsC": 1.4, "Freq": 50.0, "TotkWhImport": 9.0})
    assert obj["Power"] == {"L1": 1.0, "L2": 2.0, "L3": 3.0}
    assert obj["THD"] == {"VoltageNeutral": {"L1": None, "L2": None, "L3": 1.4}, "AvgVoltageNeutral": 1.5}
    assert obj["Frequency"] == 50.0 and obj["TotalImport"] == 9.0
    assert obj["Unix"] == 1538733601


def test_no_reading_yet_has_zero_time_and_nulls():
    obj = readings("M", 1, 0, {})
    assert obj["Timestamp"] == ZERO_TIME and obj["Unix"] == 0
    assert obj["Voltage"] == {"L1": None, "L2": None, "L3": None}


def test_nan_and_infinity_become_null_and_json_stays_valid():
    body = dumps(readings("M", 1, 5, {"VolLocPhsA": math.nan, "VolLocPhsB": math.inf, "VolLocPhsC": 230.0}))
    assert body.endswith(b"\n")
    assert json.loads(body)["Voltage"] == {"L1": None, "L2": None, "L3": 230.0}
