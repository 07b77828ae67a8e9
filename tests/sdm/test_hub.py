"""The hub: last values, the bounded minute window, status edges, subscribers."""

import pytest

from sdm import hub as hub_module
from sdm.hub import UNAVAILABLE, Hub, MeterConfig, MeterUpdate
from sdm.meters.registry import lookup


@pytest.fixture
def hub():
    return Hub([MeterConfig(2, "SDM120", lookup("sdm120"), "M2"), MeterConfig(1, "SDM", lookup("sdm"), "M1")])


def test_meters_are_kept_in_id_order(hub):
    assert list(hub.meters) == ["M1", "M2"]


def test_minute_average_is_a_per_measurement_mean(hub):
    hub.publish("M1", {"VolLocPhsA": 230.0, "WLocPhsA": 100.0}, timestamp=1000.0)
    hub.publish("M1", {"VolLocPhsA": 232.0}, timestamp=1010.0)
    avg = hub.meters["M1"].minute_average(now=1020.0)
    assert avg["Voltage"]["L1"] == 231.0
    assert avg["Power"]["L1"] == 100.0
    assert avg["Unix"] == 1010


def test_minute_average_forgets_older_samples(hub):
    hub.publish("M1", {"VolLocPhsA": 100.0}, timestamp=1000.0)
    hub.publish("M1", {"VolLocPhsA": 300.0}, timestamp=1061.0)
    assert hub.meters["M1"].minute_average(now=1065.0)["Voltage"]["L1"] == 300.0


def test_empty_window_answers_nulls(hub):
    avg = hub.meters["M2"].minute_average(now=5000.0)
    assert avg["Voltage"]["L1"] is None and avg["Unix"] == 0 and avg["ModbusDeviceId"] == 2


def test_window_is_bounded(hub, monkeypatch):
    for i in range(hub_module.WINDOW_MAX_SAMPLES + 50):
        hub.publish("M1", {"VolLocPhsA": 230.0}, timestamp=1000.0 + i * 0.001)
    assert len(hub.meters["M1"].window) == hub_module.WINDOW_MAX_SAMPLES


def test_json_is_serialized_once_per_change(hub):
    hub.publish("M1", {"VolLocPhsA": 230.0}, timestamp=1000.0)
    first = hub.meters["M1"].readings_json()
    assert hub.meters["M1"].readings_json() is first
    hub.publish("M1", {"VolLocPhsA": 231.0}, timestamp=1001.0)
    assert hub.meters["M1"].readings_json() is not first


def test_unavailable_meter_leaves_the_available_list(hub):
    hub.publish("M1", {"VolLocPhsA": 230.0}, timestamp=1000.0)
    hub.set_status("M1", UNAVAILABLE)
    assert [m.device_id for m in hub.available()] == [2]
    assert hub.meters["M1"].age(now=1010.0) == 10.0
    assert len(hub.meters["M1"].window) == 0


def test_subscribers_get_updates_and_a_failing_one_stays(hub):
    got, seen_by_flaky = [], []

    def flaky(event):
        seen_by_flaky.append(event)
        if len(seen_by_flaky) == 1:
            raise RuntimeError("boom")

    hub.subscribe(flaky)
    hub.subscribe(got.append)
    hub.publish("M1", {"VolLocPhsA": 230.0}, timestamp=1000.0, complete=True)
    hub.publish("M1", {"VolLocPhsA": 231.0}, timestamp=1001.0)
    assert [type(e) for e in got] == [MeterUpdate, MeterUpdate]
    assert got[0].complete and got[0].values == {"VolLocPhsA": 230.0}
    assert len(seen_by_flaky) == 2          # one failure does not unsubscribe it
    assert hub.meters["M1"].complete_readings == 1


def test_every_output_gets_the_checked_values_and_raw_ones_stay_apart(hub):
    updates = []
    hub.subscribe(updates.append)
    hub.publish("M1", {"TotkWhImport": 1000.0, "Freq": 50.0}, timestamp=1000.0)
    hub.publish("M1", {"TotkWhImport": 1000.0 * 1000, "Freq": 1.4e-45}, timestamp=1001.0)   # a garbled reply
    meter = hub.meters["M1"]
    assert meter.values == {"TotkWhImport": 1000.0, "Freq": None}
    assert updates[-1].values == {"TotkWhImport": 1000.0, "Freq": None}
    assert b'"TotalImport":1000.0' in meter.readings_json() and b'"Frequency":null' in meter.readings_json()
    assert b'"TotalImport":1000000.0' in meter.raw_readings_json()
    checks = hub.checks(meter)
    assert checks["Counts"]["jump"] == 1 and checks["Counts"]["bounds"] == 1
    assert checks["CounterEvents"] == []        # held readings are counted, not listed


def test_a_minute_average_of_a_counter_is_its_last_accepted_value(hub):
    for i, energy in enumerate([100.0, 100.02, 100.04]):
        hub.publish("M1", {"TotkWhImport": energy, "VolLocPhsA": 230.0 + i}, timestamp=1000.0 + i)
    avg = hub.meters["M1"].minute_average(now=1003.0)
    assert avg["TotalImport"] == 100.04 and avg["Voltage"]["L1"] == 231.0


def test_a_confirmed_reset_is_listed_once_in_the_status(hub, caplog):
    from sdm.sanity import CounterGuard, CounterPolicy, Sanity
    quick = Hub([hub.meters["M1"].config],
                sanity=Sanity(CounterGuard(CounterPolicy(confirm_readings=2, confirm_seconds=1.0))))
    quick.publish("M1", {"TotkWhImport": 500.0}, timestamp=1000.0)
    for i in range(4):
        quick.publish("M1", {"TotkWhImport": 0.1 + i * 0.001}, timestamp=1001.0 + i)
    events = quick.checks(quick.meters["M1"])["CounterEvents"]
    assert [(e["Kind"], e["From"], e["To"]) for e in events] == [("reset", 500.0, 0.101)]
    assert quick.meters["M1"].values["TotkWhImport"] == pytest.approx(0.103)
    assert [r.levelname for r in caplog.records if "reset accepted" in r.getMessage()] == ["WARNING"]


def test_a_value_no_longer_read_is_null_not_its_old_number(hub):
    hub.publish("M1", {"Freq": 50.0, "VolLocPhsA": 230.0}, timestamp=1000.0)
    hub.drop("M1", ["Freq"])
    assert hub.meters["M1"].values == {"Freq": None, "VolLocPhsA": 230.0}
    assert b'"Frequency":null' in hub.meters["M1"].readings_json()


def test_a_reset_of_every_counter_of_a_meter_is_listed_whole_in_the_status():
    """A replaced meter resets all its counters at once: /status lists every one, not the last few."""
    from sdm.sanity import COUNTERS, CounterGuard, CounterPolicy, Sanity
    model = lookup("sdm630")
    counters = sorted(COUNTERS & set(model.names))
    quick = Hub([MeterConfig(1, "SDM630", model, "M1")],
                sanity=Sanity(CounterGuard(CounterPolicy(confirm_readings=2, confirm_seconds=1.0))))
    quick.publish("M1", {name: 500.0 for name in counters}, timestamp=1000.0)
    for i in range(3):
        quick.publish("M1", {name: 0.1 + i * 0.001 for name in counters}, timestamp=1001.0 + i)
    events = quick.checks(quick.meters["M1"])["CounterEvents"]
    assert sorted(e["Value"] for e in events) == counters
    assert {e["Kind"] for e in events} == {"reset"}
