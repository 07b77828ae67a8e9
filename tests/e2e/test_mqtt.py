"""End to end: simulator, sdm630_httpd and a real mosquitto, checked by a real paho subscriber."""

import json
import re
import signal
import subprocess

import pytest

from sdm.meters.registry import lookup
from sdm.sanity import COUNTERS
from tests.support import reading_values, wait_until

DEVICES = "sdm630:1,sdm120:2"
FAST_BACKOFF = ("--mqtt-backoff-max", "2")


def mqtt_gateway(gateway, simulator, broker, *extra, devices=DEVICES, sim_args=(), **kwargs):
    sim = simulator(devices, *sim_args)
    return gateway(sim.link, devices, "-b", broker.url, *FAST_BACKOFF, *extra, **kwargs)


def mqtt_status(gw) -> dict:
    return gw.get("/status").json()["Mqtt"]


def parsed(messages):
    return [json.loads(m.payload) for m in messages]


def test_state_json_equals_last(simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    sub = mqtt_subscriber(b.port, ["bus1/+/state"])
    gw = mqtt_gateway(gateway, simulator, b, "-t", "bus1")
    for device_id in (1, 2):
        topic = f"bus1/Instrument{device_id}/state"

        def same_moment(device_id=device_id, topic=topic):
            last = gw.get(f"/last/{device_id}").json()
            states = {s["Timestamp"]: s for s in parsed(sub.on(topic))}
            return (states[last["Timestamp"]], last) if last["Timestamp"] in states else None

        state, last = wait_until(same_moment, 15, interval=0.01, what=f"a state of meter {device_id} seen in /last")
        assert state == last
        assert list(state) == list(last)
        assert not any(m.retain for m in sub.on(topic))


def test_per_value_topics_carry_exactly_the_model_values(simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    sub = mqtt_subscriber(b.port, ["sdm630/#"])
    gw = mqtt_gateway(gateway, simulator, b, "--mqtt-per-value", "-f", "Meter #%d")   # the v0.7 default, topic-safe
    raw = reading_values(gw.get("/last/2?raw=1").json())
    # a single-phase meter never exports: a counter that never left 0 is no value (docs/counters.md)
    names = [name for name in lookup("sdm120").names if not (name in COUNTERS and raw[name] == 0.0)]
    assert "TotkWhExport" not in names and "TotkWhImport" in names
    for name in names:
        message = sub.wait_for(f"sdm630/Meter_2/{name}")
        assert re.fullmatch(r"-?\d+\.\d{3}", message.text()), (name, message.payload)
    assert 200 < float(sub.last("sdm630/Meter_2/VolLocPhsA").text()) < 260
    assert json.loads(sub.wait_for("sdm630/Meter_2/state").payload)["UniqueId"] == "Meter #2"
    meter_topics = {m.topic for m in sub.messages if m.topic.startswith("sdm630/Meter_2/")}
    assert meter_topics - {"sdm630/Meter_2/state", "sdm630/Meter_2/availability"} == \
        {f"sdm630/Meter_2/{name}" for name in names}


def test_status_and_availability_are_retained_and_the_will_follows_kill_9(
        simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    gw = mqtt_gateway(gateway, simulator, b)
    wait_until(lambda: mqtt_status(gw)["Connected"], 10, what="MQTT connected")
    late = mqtt_subscriber(b.port, ["sdm630/status", "sdm630/+/availability"])
    status = late.wait_for("sdm630/status")
    assert (status.text(), status.retain) == ("online", True)
    for unique_id in ("Instrument1", "Instrument2"):
        available = late.wait_for(f"sdm630/{unique_id}/availability", lambda m: m.retain)
        assert available.text() == "online"
    gw.proc.kill()
    assert late.wait_for("sdm630/status", lambda m: m.text() == "offline", timeout=10)
    after = mqtt_subscriber(b.port, ["sdm630/status"])
    will = after.wait_for("sdm630/status")
    assert (will.text(), will.retain) == ("offline", True)


def test_availability_follows_the_meter(simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    sub = mqtt_subscriber(b.port, ["sdm630/+/availability"])
    sim = simulator("sdm630:1")
    gw = gateway(sim.link, "sdm630:1,sdm120:3", "-b", b.url, "--max-failures", "2", "--timeout", "0.1",
                 "--reprobe-max", "1", wait_values=False)
    topic = "sdm630/Instrument1/availability"
    # announced at once: offline, or online when the bus (a thread of its own) has read it already
    assert sub.wait_for(topic).text() in ("offline", "online")
    sub.wait_for(topic, lambda m: m.text() == "online")
    assert sub.wait_for("sdm630/Instrument3/availability").text() == "offline"   # never answers
    seen = len(sub.on(topic))
    sim.signal(signal.SIGSTOP)
    try:
        sub.wait_for(topic, lambda m: m.text() == "offline", after=seen, timeout=10)
    finally:
        sim.signal(signal.SIGCONT)
    seen = len(sub.on(topic))
    sub.wait_for(topic, lambda m: m.text() == "online", after=seen, timeout=10)
    assert [m.retain for m in sub.on(topic)] == [False] * len(sub.on(topic))   # live, to a subscriber already there
    assert gw.get("/last/1").status == 200


def test_broker_restart_reconnects_republishes_and_drops_what_does_not_fit(
        simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    gw = mqtt_gateway(gateway, simulator, b, "--ha-discovery", "-r", "0", "--mqtt-per-value", "--mqtt-queue", "20")
    first = mqtt_subscriber(b.port, ["homeassistant/#"])
    assert first.wait_for("homeassistant/sensor/sdm630/Instrument1_TotkWhImport/config").retain
    b.stop()
    wait_until(lambda: not mqtt_status(gw)["Connected"], 10, what="the gateway to notice the broker is gone")
    unix = gw.get("/last/1").json()["Unix"]
    wait_until(lambda: gw.get("/last/1").json()["Unix"] > unix, 5, what="polling to go on without the broker")
    dropped = mqtt_status(gw)["Dropped"]   # in flight when the broker went
    wait_until(lambda: mqtt_status(gw)["Dropped"] > dropped + 20, 10, what="the bounded queue to overflow")
    b.start()
    wait_until(lambda: mqtt_status(gw)["Connected"], 15, what="the gateway to reconnect")
    after = mqtt_subscriber(b.port, ["homeassistant/#", "sdm630/status", "sdm630/Instrument1/state"])
    config = after.wait_for("homeassistant/sensor/sdm630/Instrument1_TotkWhImport/config")
    assert json.loads(config.payload)["device_class"] == "energy"
    assert after.wait_for("sdm630/status").text() == "online"
    after.wait_for("sdm630/Instrument1/state")
    published = mqtt_status(gw)["Published"]
    wait_until(lambda: mqtt_status(gw)["Published"] > published, 5, what="publishing to go on")
    assert mqtt_status(gw)["Reconnects"] == 1
    assert gw.log().count("reconnecting with back-off") == 1


def test_broker_down_at_start(simulator, gateway, broker, mqtt_subscriber):
    b = broker(start=False)
    gw = mqtt_gateway(gateway, simulator, b)
    assert gw.get("/last/1").status == 200
    assert mqtt_status(gw) == {"Connected": False, "Reconnects": 0, "Published": 0, "Dropped": 0}
    b.start()
    sub = mqtt_subscriber(b.port, ["sdm630/+/state"])
    sub.wait_for("sdm630/Instrument1/state", timeout=15)
    assert mqtt_status(gw)["Connected"] is True
    assert gw.log().count("not reachable") == 1


def test_two_gateways_on_one_broker_do_not_collide(simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    sub = mqtt_subscriber(b.port)
    gw_a = mqtt_gateway(gateway, simulator, b, "-i", "house", "-t", "house", "--ha-discovery", devices="sdm630:1")
    gw_b = mqtt_gateway(gateway, simulator, b, "-i", "garage", "-t", "garage", "--ha-discovery", "-q", "1",
                        devices="sdm630:1", sim_args=("--seed", "8"))
    for site, gw in (("house", gw_a), ("garage", gw_b)):
        state = json.loads(sub.wait_for(f"{site}/Instrument1/state").payload)
        assert state["TotalImport"] == pytest.approx(gw.get("/last/1").json()["TotalImport"], abs=0.01)
    assert (json.loads(sub.last("house/Instrument1/state").payload)["TotalImport"]
            != pytest.approx(json.loads(sub.last("garage/Instrument1/state").payload)["TotalImport"], abs=1))
    configs = {site: {m.topic: json.loads(m.payload) for m in sub.messages
                      if m.topic.startswith(f"homeassistant/sensor/{site}/")} for site in ("house", "garage")}
    assert len(configs["house"]) == len(configs["garage"]) == len(lookup("sdm630").names)
    ids = {site: {c["unique_id"] for c in found.values()} for site, found in configs.items()}
    assert not ids["house"] & ids["garage"]
    devices = {site: {c["device"]["identifiers"][0] for c in found.values()} for site, found in configs.items()}
    assert len(devices["house"]) == len(devices["garage"]) == 1 and devices["house"] != devices["garage"]
    gw_a.proc.kill()
    sub.wait_for("house/status", lambda m: m.text() == "offline", timeout=10)
    assert sub.last("garage/status").text() == "online"
    assert mqtt_status(gw_b) | {"Published": 0} == {"Connected": True, "Reconnects": 0, "Published": 0,
                                                    "Dropped": 0}


def test_removed_meter_configs_are_cleared_at_the_next_start(simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    sim = simulator(DEVICES)
    first = gateway(sim.link, DEVICES, "-b", b.url, "--ha-discovery")
    watcher = mqtt_subscriber(b.port, ["homeassistant/sensor/sdm630/+/config", "sdm630/status"])
    gone = "homeassistant/sensor/sdm630/Instrument2_VolLocPhsA/config"
    assert watcher.wait_for(gone).retain
    first.stop()
    assert watcher.wait_for("sdm630/status", lambda m: m.text() == "offline", timeout=10)
    gateway(sim.link, "sdm630:1", "-b", b.url, "--ha-discovery")
    watcher.wait_for(gone, lambda m: m.payload == b"", timeout=10)
    fresh = mqtt_subscriber(b.port, ["homeassistant/sensor/sdm630/+/config"])
    fresh.wait_for("homeassistant/sensor/sdm630/Instrument1_VolLocPhsA/config")
    assert not [m for m in fresh.messages if "Instrument2" in m.topic]


def test_discovery_is_sent_again_when_home_assistant_comes_online(simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    topic = "homeassistant/sensor/sdm630/Instrument1_TotW/config"
    sub = mqtt_subscriber(b.port, [topic])
    mqtt_gateway(gateway, simulator, b, "--ha-discovery")
    sub.wait_for(topic)
    sub.client.publish("homeassistant/status", "online")
    sub.wait_for(topic, after=1)


def test_rate_limits_each_topic(simulator, gateway, broker, mqtt_subscriber):
    b = broker()
    sub = mqtt_subscriber(b.port, ["sdm630/Instrument1/state"])
    mqtt_gateway(gateway, simulator, b, "-r", "1", devices="sdm630:1")
    sub.wait_for("sdm630/Instrument1/state", after=3, timeout=10)
    arrivals = [m.at for m in sub.on("sdm630/Instrument1/state")]
    assert min(b - a for a, b in zip(arrivals, arrivals[1:])) > 0.8


def test_tls_broker_with_ca_file(simulator, gateway, broker, mqtt_subscriber, tmp_path):
    key, cert = tmp_path / "broker.key", tmp_path / "broker.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    b = broker(tls=(cert, key))
    sub = mqtt_subscriber(b.port, ["sdm630/+/state"])
    sim = simulator("sdm630:1")
    gateway(sim.link, "sdm630:1", "-b", f"ssl://127.0.0.1:{b.tls_port}", "--mqtt-ca", str(cert))
    sub.wait_for("sdm630/Instrument1/state")


def test_login_with_the_password_from_the_environment(simulator, gateway, broker, mqtt_subscriber, tmp_path,
                                                      monkeypatch):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "meter", "s3cret"], check=True)
    b = broker(extra_config=f"password_file {passwords}\n")
    sub = mqtt_subscriber(b.port, ["sdm630/+/state"], login=("meter", "s3cret"))
    sim = simulator("sdm630:1")
    wrong = gateway(sim.link, "sdm630:1", "-b", b.url, "--user", "meter", "--password", "wrong", *FAST_BACKOFF)
    wait_until(lambda: "refused" in wrong.log(), 10, what="the broker to refuse a wrong password")
    assert mqtt_status(wrong)["Connected"] is False and wrong.get("/last/1").status == 200
    wrong.stop()
    monkeypatch.setenv("SDM_MQTT_PASSWORD", "s3cret")
    gateway(sim.link, "sdm630:1", "-b", b.url, "--user", "meter")
    sub.wait_for("sdm630/Instrument1/state")
    assert wrong.log().count("refused") == 1
