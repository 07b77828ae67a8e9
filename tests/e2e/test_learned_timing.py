"""End to end: the gateway learns each meter's timing from simulated meters that differ in it,
keeps it over a restart, and leaves a configured pause alone.

One gateway reads five buses at once (a pty each, 9600 baud with wire time), one meter per bus,
so that every meter's requests follow its own answers and the behaviours are learned side by side.
"""

import json

import pytest

from tests.support import Gateway, wait_until

BUSES = {   # bus name: simulator options of its one SDM630 at id 1
    "quick": [],
    "pause60": ["--min-pause", "1=60"],
    "jitter": ["--turnaround", "1=20-120"],
    "sulky": ["--sulk", "1=60:3"],
    "fixed": ["--min-pause", "1=60"],
}
FIXED_PAUSE_MS = 80


def config_text(links) -> str:
    out = ["state_dir = \"{state}\"", "{http}"]
    for name, link in links.items():
        out += ["[[bus]]", f'name = "{name}"', f'port = "{link}"', "comset = 2",
                "  [[bus.meter]]", '  type = "sdm630"', "  id = 1", f'  name = "{name}"']
        if name == "fixed":
            out.append(f"  pause = {FIXED_PAUSE_MS}")
    return "\n".join(out) + "\n"


def meters(gateway):
    return {m["Name"]: m for m in gateway.get("/status").json()["ConfiguredMeters"]}


@pytest.fixture
def five_buses(simulator, tmp_path):
    links = {name: simulator("sdm630:1", "--baud", "9600", *extra).link for name, extra in BUSES.items()}
    text = config_text(links).replace("{state}", str(tmp_path / "state"))
    gateway = Gateway.from_file(text, tmp_path / "timing.toml")
    yield gateway, tmp_path / "state" / "timing.json"
    gateway.stop()


def learned(meter) -> bool:
    return meter["Timing"] is not None and meter["Requests"] >= 150


def test_each_meter_gets_the_timing_it_needs_and_keeps_it_over_a_restart(five_buses):
    gateway, state_file = five_buses
    gateway.start()
    wait_until(lambda: all(learned(m) for m in meters(gateway).values()) and meters(gateway)["quick"]["Timing"][
        "PauseMs"] == 0, 90, interval=1, what="150 exchanges with every meter and no pause for the quick one")
    wait_until(lambda: 45 <= meters(gateway)["pause60"]["Timing"]["PauseMs"] <= 70
               and meters(gateway)["pause60"]["Requests"] >= 300, 60, interval=1, what="the 60 ms meter's pause")
    status = meters(gateway)
    quick, pause60, jitter, sulky, fixed = (status[name] for name in BUSES)

    assert sum(quick["ErrorsByKind"].values()) == 0                # no pause needed: halving it never hurt
    assert pause60["ErrorsByKind"]["timeout"] <= 12                # failed trials (each made twice) while searching
    assert pause60["Timing"]["Learning"] == "pause and timeout"
    assert jitter["ErrorsByKind"]["timeout"] == 0                  # the learned timeout is never too short
    assert jitter["Timing"]["TurnaroundMs"]["max"] < jitter["Timing"]["TimeoutMs"] <= 300
    assert jitter["Timing"]["TurnaroundMs"]["max"] > 100
    assert sulky["Timing"]["PauseMs"] >= 45 and sulky["Status"] == "available"
    assert fixed["Timing"]["PauseMs"] == FIXED_PAUSE_MS and "configured" in fixed["Timing"]["Learning"]
    assert sum(fixed["ErrorsByKind"].values()) == 0                # 80 ms: never too soon for a 60 ms meter

    gateway.stop()
    saved = json.loads(state_file.read_text())["meters"]
    assert saved["pause60/1"]["model"] == "sdm630"
    assert abs(saved["pause60/1"]["pause"] * 1000 - pause60["Timing"]["PauseMs"]) < 10

    gateway.start()                                                # restored, not learned afresh
    wait_until(lambda: meters(gateway)["pause60"]["Timing"] is not None, 10, what="timing after the restart")
    again = meters(gateway)
    assert again["pause60"]["Timing"]["PauseMs"] == pytest.approx(saved["pause60/1"]["pause"] * 1000, abs=0.1)
    assert again["quick"]["Timing"]["PauseMs"] == 0
    assert again["pause60"]["Timing"]["TimeoutMs"] < 300           # the saved turnarounds count at once
