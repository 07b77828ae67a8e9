"""The simulated values obey the physics they claim."""

import pytest

from simulator.physics import Physics
from tests.fakes import FrozenClock


@pytest.mark.parametrize("phases", [1, 3])
def test_power_is_voltage_times_current_times_power_factor(phases):
    values = Physics(phases, seed=1).sample()
    for p in "ABC"[:phases]:
        u, i, pf = values[f"VolLocPhs{p}"], values[f"AmpLocPhs{p}"], values[f"AngLocPhs{p}"]
        assert values[f"WLocPhs{p}"] == pytest.approx(u * i * pf)
        assert values[f"VALocPhs{p}"] ** 2 == pytest.approx(values[f"WLocPhs{p}"] ** 2 + values[f"VArLocPhs{p}"] ** 2)
        assert 207 < u < 253 and -1 <= pf <= 1
    assert 49.9 < values["Freq"] < 50.1


def test_energy_integrates_power_into_import_or_export():
    clock = FrozenClock(0.0)
    physics = Physics(3, seed=2, clock=clock)
    before = dict(physics.sample())
    clock.now += 3600.0
    after = physics.sample()
    for p in "ABC":
        kwh = before[f"WLocPhs{p}"] / 1000.0   # power held for one hour
        if kwh >= 0:
            assert after[f"TotkWhImportPhs{p}"] - before[f"TotkWhImportPhs{p}"] == pytest.approx(kwh)
            assert after[f"TotkWhExportPhs{p}"] == before[f"TotkWhExportPhs{p}"]
        else:
            assert after[f"TotkWhExportPhs{p}"] - before[f"TotkWhExportPhs{p}"] == pytest.approx(-kwh)
            assert after[f"TotkWhImportPhs{p}"] == before[f"TotkWhImportPhs{p}"]
    assert after["TotkWhImport"] == pytest.approx(sum(after[f"TotkWhImportPhs{p}"] for p in "ABC"))


def test_a_seed_makes_a_run_reproducible():
    assert Physics(3, seed=5, clock=FrozenClock()).sample() == Physics(3, seed=5, clock=FrozenClock()).sample()


def test_an_injected_energy_drop_halves_the_counters_once():
    clock = FrozenClock(100.0)
    physics = Physics(3, seed=1, clock=clock, energy_drop_at=10.0)
    clock.now += 5
    before = dict(physics.sample())
    clock.now += 5
    after = dict(physics.sample())
    assert after["TotkWhImport"] < before["TotkWhImport"] * 0.6
    assert after["TotkVArhExportPhsC"] < before["TotkVArhExportPhsC"] * 0.6
    clock.now += 5
    assert physics.sample()["TotkWhImport"] >= after["TotkWhImport"]
