"""Which buses a reloaded configuration stops and starts."""

from hypothesis import given
from hypothesis import strategies as st

from sdm.config import BusConfig, Config
from sdm.reload import plan

NAMES = ["a", "b", "c", "d"]


def buses():
    return st.dictionaries(st.sampled_from(NAMES), st.sampled_from(["/dev/ttyUSB0", "/dev/ttyUSB1"]), max_size=4)


def config(ports) -> Config:
    return Config(buses=tuple(BusConfig(name, port) for name, port in ports.items()))


@given(old=buses(), new=buses())
def test_only_buses_that_changed_are_stopped_or_started(old, new):
    steps = plan(config(old), config(new))
    for name in NAMES:
        untouched = name in old and name in new and old[name] == new[name]
        assert (name in steps["stop"]) == (name in old and not untouched)
        assert (name in steps["start"]) == (name in new and not untouched)
    assert len(set(steps["stop"])) == len(steps["stop"]) and len(set(steps["start"])) == len(steps["start"])
