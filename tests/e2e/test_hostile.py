"""The bus comes first (issue 11), measured with real processes and a bounded hostile load.

A paced simulated SDM630 at 9600 baud (about 6 requests a second), the gateway
limited to 1024 open files, and the load of bench/hostile_load.py from a
process of its own: a websocket text flood, 300 connections sending headers a
byte a second, twenty clients fetching /metrics and /minuteavg in a loop; each
alone for a few seconds, then all together. Under each the bus keeps at least
0.9 of its idle request rate (from the simulator's served log), no new
timeouts or late frames appear, and a normal client gets /last/1 within 1 s.
``make bench`` (bench/hostile.py) runs the same rounds longer.
"""

import pytest

from bench import hostile

SECONDS = {("ws",): 3.0, ("slow",): 3.0, ("http",): 3.0, ("ws", "slow", "http"): 4.0}


@pytest.fixture(scope="module")
def bus(tmp_path_factory):
    with hostile.bus_and_gateway(tmp_path_factory.mktemp("hostile")) as running:
        yield running


@pytest.fixture(scope="module")
def idle(bus):
    return hostile.measure(bus, 4.0)


@pytest.mark.parametrize("kinds", list(SECONDS), ids="+".join)
def test_the_bus_keeps_its_rate_and_timing_under_hostile_clients(bus, idle, kinds):
    row = hostile.held(bus, kinds, SECONDS[kinds], idle)
    attacker = row["attacker"]
    assert idle.rate > 4.0, f"the idle bus should make about 6 requests a second: {row}"
    assert row["ratio"] >= hostile.RATE_TARGET, row
    assert row["new errors loaded"] == 0, row
    assert row["slowest /last/1 s"] <= hostile.LATENCY_TARGET and row["failed probes"] == 0, row
    if "ws" in kinds:     # the flood really was refused, not merely slow
        assert attacker.get("ws closed by the gateway", 0) >= 1, attacker
    if "http" in kinds:
        assert attacker.get("http 200", 0) > 100, attacker
    if "slow" in kinds:
        assert attacker.get("slow connections", 0) >= hostile.SLOW_CONNECTIONS, attacker
