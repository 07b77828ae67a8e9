"""The simulator's injected energy drop (for testing what outputs publish)."""

from simulator.physics import Physics


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_energy_counters_halve_once_at_the_given_time():
    clock = Clock()
    physics = Physics(phases=3, seed=1, clock=clock, energy_drop_at=10.0)
    clock.now += 5
    before = dict(physics.sample())
    clock.now += 5
    after = dict(physics.sample())
    assert after["TotkWhImport"] < before["TotkWhImport"] * 0.6
    assert after["TotkVArhExportPhsC"] < before["TotkVArhExportPhsC"] * 0.6
    clock.now += 5
    assert physics.sample()["TotkWhImport"] >= after["TotkWhImport"]


def test_no_drop_unless_asked():
    clock = Clock()
    physics = Physics(phases=1, seed=1, clock=clock)
    first = physics.sample()["TotkWhImport"]
    clock.now += 3600
    assert physics.sample()["TotkWhImport"] >= first
