"""The examples of docs/integrations.md, run: the Node-RED flow in a real Node-RED, the openHAB
JSONPath transforms against the state messages they parse."""

import json
import re
from collections import defaultdict

from tests.node_red import NodeRed
from tests.support import ROOT, wait_until

DOC = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
DEVICES = "sdm630:1,sdm120:2"


def section(title: str) -> str:
    """The text of one '## ' section of the document."""
    return DOC.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_block(text: str, language: str) -> str:
    return re.search(rf"```{language}\n(.*?)```", text, re.S).group(1)


def imported(flow):
    """The flow as Menu → Import leaves it: its nodes on a tab of their own (config nodes stay global)."""
    tab = {"id": "sdm-tab", "type": "tab", "label": "sdm"}
    return [tab] + [dict(node, z=tab["id"]) if "wires" in node else node for node in flow]


def test_the_node_red_flow_prints_every_meters_power(simulator, gateway, broker, mqtt_subscriber, tmp_path):
    b = broker()
    flow = imported(json.loads(code_block(section("Node-RED"), "json")))
    for node in flow:
        if node["type"] == "mqtt-broker":
            assert (node["broker"], node["port"]) == ("127.0.0.1", "1883")     # as documented
            node["port"] = str(b.port)                                        # the test's broker
    states = mqtt_subscriber(b.port, ["sdm630/+/state"])
    red = NodeRed(tmp_path / "node-red", flow).start()
    try:
        sim = simulator(DEVICES)
        gateway(sim.link, DEVICES, "-b", b.url)
        printed = defaultdict(list)

        def three_each():
            printed.clear()
            for data in red.debug:
                printed[data.get("topic")].append(data)
            return all(len(printed[meter]) >= 3 for meter in ("Instrument1", "Instrument2"))

        wait_until(three_each, 60, interval=0.2, what="Node-RED's debug node to print both meters")
    finally:
        red.stop()
    published = defaultdict(set)
    for message in states.on("sdm630/Instrument1/state") + states.on("sdm630/Instrument2/state"):
        reading = json.loads(message.payload)
        published[reading["UniqueId"]].add(reading["TotalPower"] if reading["TotalPower"] is not None
                                           else reading["Power"]["L1"])
    for meter, shown in printed.items():
        for data in shown:
            assert data["format"] == "number", data
            assert float(data["msg"]) in published[meter], (meter, data["msg"])


def jsonpath(document, path: str):
    """The dotted JSONPath subset the openHAB example uses: ``$.Key`` and ``$.Key.Sub``."""
    assert re.fullmatch(r"\$(\.[A-Za-z0-9]+)+", path), path
    for key in path.split(".")[1:]:
        document = document[key]
    return document


def test_the_openhab_things_and_items_fit_the_state_messages(simulator, gateway, broker, mqtt_subscriber):
    text = section("openHAB")
    things, items = re.findall(r"```java\n(.*?)```", text, re.S)
    channels = re.findall(r'Type number : (\w+) +"[^"]*" +\[ stateTopic="([^"]+)",\s+'
                          r'transformationPattern="JSONPATH:([^"]+)", unit="(\w+)" \]', things)
    assert len(channels) == 4
    bridge = re.search(r"Bridge mqtt:broker:(\w+)", things).group(1)
    thing = re.search(r"Thing topic (\w+)", things).group(1)
    availability = re.search(r'availabilityTopic="([^"]+)",\s+payloadAvailable="(\w+)", '
                             r'payloadNotAvailable="(\w+)"', things)
    availability_topic, online, offline = availability.groups()
    linked = re.findall(r'channel="mqtt:topic:(\w+):(\w+):(\w+)"', items)
    assert sorted(linked) == sorted((bridge, thing, name) for name, *_ in channels)

    b = broker()
    sub = mqtt_subscriber(b.port)
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES, "-b", b.url)
    topic = channels[0][1]
    state = json.loads(sub.wait_for(topic, timeout=20).payload)
    sub.wait_for(availability_topic, lambda m: m.text() == online, timeout=20)
    assert {m.text() for m in sub.on(availability_topic)} <= {online, offline}
    last = gw.get(f"/last/{state['ModbusDeviceId']}").json()
    for name, state_topic, path, unit in channels:
        assert state_topic == topic
        value = jsonpath(state, path)
        assert isinstance(value, (int, float)), (name, path, value)
        assert isinstance(jsonpath(last, path), (int, float))     # the same keys as /last/{id}
        assert unit in ("W", "kWh")
