"""The logger's file: packing, writing, reading back, and refusing what is not ours."""

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdm.store import Reader, Sample, StoreError, Writer, column_order, pack, unpack

T0 = 1_700_000_000_000


def fill(path, samples):
    writer = Writer(str(path))
    try:
        return writer.write(samples)
    finally:
        writer.close()


def three_reads():
    return [Sample(1, "VolLocPhsA", T0, 230.1), Sample(1, "AmpLocPhsA", T0, 1.5),
            Sample(26, "VolLocPhsA", T0, 229.0), Sample(1, "VolLocPhsA", T0 + 500, 230.4),
            Sample(1, "TotkWhImport", T0 + 500, 1234.567)]


keys = st.tuples(st.integers(0, 2**46), st.integers(0, 255), st.integers(1, 255))


@given(keys, keys)
def test_packed_keys_unpack_and_sort_like_time_device_measurement(a, b):
    assert unpack(pack(*a)) == a
    assert (pack(*a) < pack(*b)) == (a < b)


def test_values_come_back_grouped_per_device_and_read_time(tmp_path):
    path = tmp_path / "log.db"
    assert fill(path, three_reads()) == 5
    reader = Reader(str(path))
    assert list(reader.rows(None, None, None)) == [
        (T0, 1, {"VolLocPhsA": 230.1, "AmpLocPhsA": 1.5}),
        (T0, 26, {"VolLocPhsA": 229.0}),
        (T0 + 500, 1, {"VolLocPhsA": 230.4, "TotkWhImport": 1234.567})]
    assert reader.columns(None, None, None) == ["VolLocPhsA", "AmpLocPhsA", "TotkWhImport"]
    summary = reader.summary()
    assert (summary.count, summary.first, summary.last) == (5, T0, T0 + 500)
    assert [(d.device, d.count, d.first, d.last, d.names) for d in summary.devices] == [
        (1, 4, T0, T0 + 500, ("VolLocPhsA", "AmpLocPhsA", "TotkWhImport")), (26, 1, T0, T0, ("VolLocPhsA",))]
    assert reader.conn.execute("SELECT * FROM sample WHERE device = 26").fetchall() == [
        (T0, 26, "VolLocPhsA", 229.0)]


def test_filters_by_device_and_half_open_time_range(tmp_path):
    path = tmp_path / "log.db"
    fill(path, three_reads())
    reader = Reader(str(path))
    assert [r[:2] for r in reader.rows([26], None, None)] == [(T0, 26)]
    assert [r[:2] for r in reader.rows(None, T0 + 1, None)] == [(T0 + 500, 1)]
    assert [r[:2] for r in reader.rows(None, None, T0 + 500)] == [(T0, 1), (T0, 26)]
    assert reader.columns([26], None, None) == ["VolLocPhsA"]
    assert reader.columns(None, T0 + 1, None) == ["VolLocPhsA", "TotkWhImport"]
    assert reader.columns(None, None, T0) == []


def test_a_value_delivered_twice_is_stored_once(tmp_path):
    writer = Writer(str(tmp_path / "log.db"))
    assert writer.write(three_reads()) == 5
    assert writer.write(three_reads()[3:] + [Sample(1, "VolLocPhsA", T0 + 900, 231.0)]) == 1
    assert writer.count() == 6
    assert writer.last_time() == T0 + 900
    writer.close()
    assert Reader(str(tmp_path / "log.db")).summary().devices[0].count == 5


def test_a_failed_transaction_stores_nothing_and_leaves_the_writer_usable(tmp_path):
    writer = Writer(str(tmp_path / "log.db"))
    writer.write(three_reads()[:1])
    with pytest.raises(sqlite3.IntegrityError):
        writer.write([Sample(1, "Freq", T0 + 1, 50.0), Sample(1, "TotW", T0 + 1, None)])
    assert writer.count() == 1
    assert writer.write([Sample(1, "TotW", T0 + 2, 99.0)]) == 1
    writer.close()
    reader = Reader(str(tmp_path / "log.db"))
    assert list(reader.rows(None, T0 + 1, None)) == [(T0 + 2, 1, {"TotW": 99.0})]


def test_names_beyond_the_255th_are_not_stored(tmp_path, caplog):
    writer = Writer(str(tmp_path / "log.db"))
    samples = [Sample(1, f"Name{n}", T0, float(n)) for n in range(256)]
    assert writer.write(samples) == 255
    assert "no room for measurement Name255" in caplog.text
    writer.close()


def test_one_recorder_per_file(tmp_path):
    first = Writer(str(tmp_path / "log.db"))
    with pytest.raises(StoreError, match="is in use by another recorder"):
        Writer(str(tmp_path / "log.db"))
    first.close()
    Writer(str(tmp_path / "log.db")).close()


def test_a_reader_sees_each_commit_while_the_writer_holds_the_file(tmp_path):
    writer = Writer(str(tmp_path / "log.db"))
    writer.write(three_reads()[:2])
    reader = Reader(str(tmp_path / "log.db"))
    assert reader.summary().count == 2
    writer.write(three_reads()[2:])
    assert reader.summary().count == 5
    writer.close()


def test_other_files_are_refused_and_left_untouched(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a database at all, but long enough to look like a file header" * 30)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = {path: path.read_bytes() for path in (text, other)}
    for path, message in ((text, "is not an SQLite database"), (other, "of another program")):
        with pytest.raises(StoreError, match=message):
            Writer(str(path))
    with pytest.raises(StoreError, match="is not an sdm630_logger file"):
        Reader(str(other))
    with pytest.raises(StoreError, match="is not an SQLite database"):
        Reader(str(text))
    assert {path: path.read_bytes() for path in (text, other)} == before


@pytest.mark.parametrize("name, message", [
    ("missing.db", "does not exist"), ("empty.db", "is empty"), ("dir", "is not a file")])
def test_a_reader_says_what_is_wrong_with_the_file(tmp_path, name, message):
    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError, match=message):
        Reader(str(tmp_path / name))


@pytest.mark.parametrize("path, message", [
    ("/sys/log.db", "cannot open /sys/log.db for writing"),
    ("/nonexistent/dir/log.db", "cannot open /nonexistent/dir/log.db for writing"),
    ("/tmp", "/tmp is a directory")])
def test_a_writer_says_why_it_cannot_write(path, message):
    with pytest.raises(StoreError, match=message):
        Writer(path)


def test_columns_keep_the_phases_of_a_quantity_together():
    assert column_order(["Zzz", "AmpLocPhsB", "VolLocPhsC", "AmpLocPhsA", "VolLocPhsA", "Aaa"]) == [
        "VolLocPhsA", "VolLocPhsC", "AmpLocPhsA", "AmpLocPhsB", "Aaa", "Zzz"]
