"""docs/registers.md is the specification of sdm/meters/: its tables must say what the code reads."""

import re
from pathlib import Path

import pytest

from sdm.meters.registry import lookup

DOC = (Path(__file__).resolve().parent.parent / "docs" / "registers.md").read_text(encoding="utf-8")
ORDER = ["sdm630", "sdm530", "sdm230", "sdm220", "sdm120", "janitza", "dzg"]   # the tables, top to bottom
ROW = re.compile(r"\| `(\w+)` \| [^|]+ \| (\d\d) \| (\d+) \| 0x([0-9A-F]{4}) "
                 r"\| (float32|uint32)(?: ÷ (\d+))? \| [^|]+ \|")


def register_tables():
    tables = DOC.split("| value | description | FC | address | hex | encoding | source |")[1:]
    assert len(tables) == len(ORDER)
    return dict(zip(ORDER, tables))


def documented(table: str):
    rows = set()
    for line in table.strip().split("\n\n")[0].splitlines()[1:]:
        match = ROW.fullmatch(line)
        assert match, line
        name, fc, address, hex_address, kind, divisor = match.groups()
        assert int(hex_address, 16) == int(address), line
        rows.add((name, int(fc), int(address), kind, float(divisor or 1)))
    return rows


@pytest.mark.parametrize("key", ORDER)
def test_each_register_table_is_what_the_code_reads(key):
    model = lookup(key)
    in_code = {(r.name, r.fc, r.address, r.encoding.kind, r.encoding.divisor) for r in model.registers}
    assert documented(register_tables()[key]) == in_code


@pytest.mark.parametrize("key", ORDER)
def test_the_summary_gives_each_models_function_code_count_and_limit(key):
    model = lookup(key)
    row = next(line for line in DOC.splitlines() if re.match(rf"\| [^|]+\(`{key}`", line))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert int(cells[1]) == model.registers[0].fc
    assert int(cells[2]) == len(model.registers)
    assert int(cells[3].split()[0].rstrip(":")) == model.max_registers
    assert int(cells[4].split()[0]) == round(model.pause * 1000)
    code = cells[5].split()[0]
    assert (int(code, 16) if code.startswith("0x") else None) == model.meter_code
