"""sdm630_logger inspect and export on files filled here (recording is tested end to end)."""

import sqlite3
from datetime import datetime

import pytest

from sdm.cli.logger import main, parse_time, parser
from sdm.store import Sample, Writer

T0 = 1_700_000_000_000
LIVE = [Sample(1, "VolLocPhsA", T0, 230.1), Sample(1, "VolLocPhsB", T0, 231.0), Sample(1, "TotkWhImport", T0, 12.5),
        Sample(26, "VolLocPhsA", T0 + 40, 229.5), Sample(26, "Freq", T0 + 40, 50.01),
        Sample(1, "VolLocPhsA", T0 + 1000, 230.2), Sample(1, "WLocPhsC", T0 + 1000, -512.25)]


@pytest.fixture
def logfile(tmp_path):
    path = tmp_path / "log.db"
    writer = Writer(str(path))
    writer.write(LIVE)
    writer.close()
    return path


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_inspect_counts_times_and_measurements_per_device(logfile, capsys):
    assert main(["inspect", "-f", str(logfile)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{logfile}: 7 values from 2 device(s)"
    assert ms(lines[1].split(": ", 1)[1]) == T0 and ms(lines[2].split(":  ", 1)[1]) == T0 + 1000
    assert lines[3].startswith("Device 1: 5 values, ")
    assert lines[3].endswith(", 4 measurements: VolLocPhsA, VolLocPhsB, WLocPhsC, TotkWhImport")
    assert lines[4].endswith(", 2 measurements: VolLocPhsA, Freq")
    assert len(lines) == 5


def test_verbose_goes_before_or_after_the_command():
    assert parser().parse_args(["-v", "inspect"]).verbose
    assert parser().parse_args(["i", "-v"]).verbose
    assert parser().parse_args(["record", "--verbose"]).verbose
    assert not parser().parse_args(["export"]).verbose


def test_export_has_every_measurement_seen_one_row_per_device_and_read_time(logfile, tmp_path):
    out = tmp_path / "log.tsv"
    assert main(["export", "-f", str(logfile), "-t", str(out)]) == 0
    header, *rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert header == ["DeviceId", "Time", "VolLocPhsA", "VolLocPhsB", "WLocPhsC", "Freq", "TotkWhImport"]
    assert [(r[0], ms(r[1])) for r in rows] == [("1", T0), ("26", T0 + 40), ("1", T0 + 1000)]
    assert [r[2:] for r in rows] == [["230.1", "231.0", "", "", "12.5"], ["229.5", "", "", "50.01", ""],
                                     ["230.2", "", "-512.25", "", ""]]
    assert all(datetime.fromisoformat(r[1]).utcoffset() is not None for r in rows)   # ISO 8601 with offset


def test_export_filters_to_stdout(logfile, capsys):
    start = datetime.fromtimestamp((T0 + 1) / 1000).isoformat()
    assert main(["export", "-f", str(logfile), "-t", "-", "--device", "1", "--from", start]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "DeviceId\tTime\tVolLocPhsA\tWLocPhsC"
    assert [line.split("\t")[0] for line in lines[1:]] == ["1"]
    assert main(["export", "-f", str(logfile), "-t", "-", "--to", str(T0 + 40)]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["1"]


def test_times_on_the_command_line():
    assert parse_time("1700000000000", "--from") == T0
    assert parse_time("2023-11-14T22:13:20Z", "--from") == T0
    assert parse_time("2023-11-14T23:13:20+01:00", "--to") == T0
    assert parse_time("2023-11-14", "--to") == ms("2023-11-14T00:00:00")
    assert parse_time(None, "--to") is None


def test_nothing_to_show_exits_1(tmp_path, logfile, capsys):
    empty = tmp_path / "empty.db"
    Writer(str(empty)).close()
    assert main(["inspect", "-f", str(empty)]) == 1
    assert "holds no values yet" in capsys.readouterr().err
    out = tmp_path / "none.tsv"
    assert main(["export", "-f", str(logfile), "-t", str(out), "--device", "7"]) == 1
    assert "no values in" in capsys.readouterr().err and not out.exists()


def bad_files(tmp_path):
    (tmp_path / "text.db").write_text("ID\tTime\tL1\n" * 100)
    (tmp_path / "zero.db").write_bytes(b"")
    conn = sqlite3.connect(tmp_path / "foreign.db")
    conn.execute("CREATE TABLE x (y)")
    conn.close()
    return {"missing.db": "does not exist", "text.db": "is not an SQLite database",
            "zero.db": "is empty", "foreign.db": "is not an sdm630_logger file"}


@pytest.mark.parametrize("command", ["inspect", "export"])
def test_bad_files_get_a_clear_message_and_exit_2(tmp_path, capsys, command):
    for name, message in bad_files(tmp_path).items():
        assert main([command, "-f", str(tmp_path / name), *(["-t", "-"] if command == "export" else [])]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sdm630_logger: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["-t", "/nonexistent/dir/x.tsv"], "cannot write /nonexistent/dir/x.tsv"),
    (["--from", "soon"], "--from 'soon' is not a time"),
    (["--device", "1-x"], "is not a number"),
])
def test_bad_export_arguments_exit_2(logfile, capsys, args, message):
    assert main(["export", "-f", str(logfile), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["-t", "0"], "--timeout 0 is not within 1-120 s"),
    (["-s", "0"], "--sleeptime 0 must be more than 0 s"),
    (["-u", "https://x"], "only http:// is supported"),
    (["-f", "/sys/log.db"], "cannot open /sys/log.db for writing"),
])
def test_bad_record_arguments_exit_2_before_any_request(tmp_path, capsys, args, message):
    assert main(["record", "-f", str(tmp_path / "log.db"), "-u", "127.0.0.1:9", *args]) == 2
    assert message in capsys.readouterr().err


def test_values_kept_while_the_disk_fails_are_bounded(monkeypatch):
    from sdm import recorder as logger_cli

    class FailingWriter:
        path = "broken.db"

        def write(self, samples):
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(logger_cli, "MAX_KEPT", 100)
    recorder = logger_cli.Recorder(FailingWriter(), follower=None, interval=1.0)
    recorder.pending = [Sample(1, "VolLocPhsA", t, 230.0) for t in range(250)]
    assert recorder.store() is False
    assert len(recorder.pending) == 100
    assert recorder.pending[0].time == 150    # the newest are kept
