"""SIGHUP reloads the configuration file: buses added, removed and changed while the others
keep their readings and the clients stay connected; a bad file or a flag-started gateway changes nothing."""

import signal

import pytest
import websocket

from tests.support import Gateway, Simulator, wait_until

BUS = """
[[bus]]
name = "{name}"
port = "{port}"
  [[bus.meter]]
  type = "{kind}"
  id = {id}
  name = "{meter}"
"""


def bus(name, sim, kind, device_id, meter):
    return BUS.format(name=name, port=sim.link, kind=kind, id=device_id, meter=meter)


@pytest.fixture
def sims(tmp_path):
    started = [Simulator(tmp_path / f"tty{n}", devices, []).start()
               for n, devices in enumerate(["sdm630:1", "sdm120:2", "janitza:26"])]
    yield started
    for sim in started:
        sim.stop()


def meters(gw):
    return {m["Name"]: m for m in gw.get("/status").json()["ConfiguredMeters"]}


def test_sighup_adds_removes_and_changes_buses_without_touching_the_others(tmp_path, sims):
    house, garage, shed = sims
    path = tmp_path / "sdm.toml"
    gw = Gateway.from_file("{http}" + bus("cabinet", house, "sdm630", 1, "house")
                           + bus("garage", garage, "sdm120", 2, "heatpump"), path).start()
    try:
        stream = websocket.create_connection(f"ws://127.0.0.1:{gw.port}/ws", timeout=5)
        wait_until(lambda: meters(gw)["house"]["CompleteReadings"] >= 5, 10, what="a few readings")
        before = meters(gw)["house"]
        path.write_text(path.read_text().split("[[bus]]")[0] + bus("cabinet", house, "sdm630", 1, "house")
                        + bus("shed", shed, "janitza", 26, "shed"))
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: reloaded" in gw.log(), 10, what="the reload logged")
        assert "bus garage removed" in gw.log() and "bus shed added" in gw.log()
        assert meters(gw)["house"]["CompleteReadings"] >= before["CompleteReadings"], "not started afresh"
        wait_until(lambda: meters(gw).get("shed", {}).get("CompleteReadings", 0) > 0, 15, what="the new bus read")
        wait_until(lambda: meters(gw)["house"]["CompleteReadings"] > before["CompleteReadings"] + 2, 10,
                   what="the untouched bus reading on, its counters kept")
        assert "heatpump" not in meters(gw) and gw.get("/last/heatpump").status == 404
        assert [b["Name"] for b in gw.get("/status").json()["Buses"]] == ["cabinet", "shed"]
        assert gw.get("/last/house").status == 200
        assert stream.recv()                      # the websocket client is still served
        stream.close()
    finally:
        gw.stop()


def test_a_changed_bus_restarts_and_a_broken_file_changes_nothing(tmp_path, sims):
    house, garage, _ = sims
    path = tmp_path / "sdm.toml"
    gw = Gateway.from_file("{http}" + bus("cabinet", house, "sdm630", 1, "house")
                           + bus("garage", garage, "sdm120", 2, "heatpump"), path).start()
    try:
        text = path.read_text()
        path.write_text(text.replace('name = "heatpump"', 'name = "heatpump"\n  interval = 2'))
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "bus garage changed" in gw.log(), 10, what="the changed bus restarted")
        assert "bus cabinet" not in gw.log().split("SIGHUP: reloaded")[1].splitlines()[0]
        path.write_text(text + "\n[[bus]]\nname = 42\n")
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "the running configuration stays" in gw.log(), 10, what="the refusal logged")
        assert set(meters(gw)) == {"house", "heatpump"}
        wait_until(lambda: gw.get("/last/heatpump").status == 200, 10, what="the changed bus reading")
    finally:
        gw.stop()


def test_sighup_without_a_file_is_logged_and_harmless(tmp_path, sims):
    gw = Gateway(str(sims[0].link), "sdm630:1", [], tmp_path / "httpd.log").start()
    try:
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "no configuration file to reload" in gw.log(), 10, what="the SIGHUP logged")
        assert gw.proc.poll() is None and gw.get("/last/1").status == 200
    finally:
        gw.stop()
