"""sdm630_monitor's reading of firehose events, without a gateway."""

from sdm.cli.monitor import Monitor, parser, status_url
from sdm.follow import local_time
from sdm.readings import rfc3339

T1 = rfc3339(1_700_000_000.25)
T2 = rfc3339(1_700_000_001.5)
MS1, MS2 = 1_700_000_000_250, 1_700_000_001_500


def meter_event(device_id, name, value, read_time):
    return {"timestamp": 1, "category": "meterupdate",
            "data": {"DeviceId": device_id, "Value": value, "IEC61850": name, "Description": "",
                     "ReadTimestamp": read_time}}


def run(monitor_events, device=1):
    lines = []
    monitor = Monitor(device, lines.append)
    for batch in monitor_events:
        monitor.events(batch)
    return lines


def test_one_line_per_read_with_the_power_of_each_phase_and_the_total():
    lines = run([[
        meter_event(1, "VolLocPhsA", 230.0, T1),
        meter_event(1, "WLocPhsA", 100.04, T1), meter_event(1, "WLocPhsB", -5.0, T1),
        meter_event(1, "WLocPhsC", 2.25, T1), meter_event(2, "WLocPhsA", 999.0, T1),
        meter_event(1, "TotW", 96.0, T2),
    ]])
    assert lines == [
        f"{local_time(MS1)} device 1: L1 100.0 W  L2 -5.0 W  L3 2.2 W  total 97.3 W",   # summed
        f"{local_time(MS2)} device 1: L1 100.0 W  L2 -5.0 W  L3 2.2 W  total 96.0 W",   # the meter's
    ]


def test_reads_without_power_print_nothing_and_single_phase_meters_sum_what_they_have():
    assert run([[meter_event(1, "VolLocPhsA", 230.0, T1)]]) == []
    assert run([[meter_event(2, "WLocPhsA", 42.0, T1)]], device=2) == [
        f"{local_time(MS1)} device 2: L1 42.0 W  L2 n/a  L3 n/a  total 42.0 W"]


def test_unknown_device_and_availability_changes_are_said_once():
    lines = []
    monitor = Monitor(9, lines.append)
    meters = [{"Id": 1, "Status": "available"}, {"Id": 26, "Status": "available"}]
    monitor.configured(meters)
    monitor.configured(meters)
    assert lines == ["device 9 is not configured on the gateway (it has: 1, 26); waiting"]
    lines.clear()
    monitor = Monitor(1, lines.append)
    status = {"timestamp": 1, "category": "statusupdate", "data": {"ConfiguredMeters": meters}}
    monitor.events([status, status])
    monitor.configured([{"Id": 1, "Status": "unavailable"}])
    monitor.configured([{"Id": 1, "Status": "available"}])
    assert lines == ["device 1: unavailable", "device 1: available"]


def test_command_line_follows_the_reference():
    args = parser().parse_args(["-u", "localhost:8080", "-d", "1"])
    assert (args.url, args.device, args.category, args.timeout) == ("localhost:8080", 1, "meterupdate", 45)
    assert status_url(args.url) == "http://localhost:8080/status"
    assert status_url("http://[::1]:8080/sdm/") == "http://[::1]:8080/sdm/status"
