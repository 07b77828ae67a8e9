"""The MQTT output's pure parts: broker URLs, flags, topic names."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdm.mqtt import HA_RATE, Broker, add_mqtt_flags, parse_broker, settings_from_args
from sdm.topics import Topics, check_base, topic_safe


@pytest.mark.parametrize("url,broker", [
    ("tcp://127.0.0.1:1883", Broker("127.0.0.1", 1883, False)),
    ("127.0.0.1", Broker("127.0.0.1", 1883, False)),
    ("broker.local:1884", Broker("broker.local", 1884, False)),
    ("ssl://broker.local", Broker("broker.local", 8883, True)),
    ("mqtts://[::1]:8884", Broker("::1", 8884, True)),
])
def test_broker_urls(url, broker):
    assert parse_broker(url) == broker


@pytest.mark.parametrize("url", ["http://host:1883", "tcp://host:port", "tcp://:1883", "tcp://host:1883/x",
                                 "tcp://host:99999"])
def test_bad_broker_urls_say_why(url):
    with pytest.raises(ValueError, match="broker"):
        parse_broker(url)


def args(*argv):
    parser = argparse.ArgumentParser()
    add_mqtt_flags(parser)
    return parser.parse_args(list(argv))


def test_mqtt_is_off_without_a_broker_and_the_flags_of_the_original_work():
    assert settings_from_args(args()) is None
    settings = settings_from_args(args("-b", "tcp://127.0.0.1:1883", "-t", "home/meters", "-i", "gw2",
                                       "-q", "1", "-r", "5", "-l", "--user", "u", "--password", "p"))
    assert (settings.base, settings.client_id, settings.qos, settings.rate, settings.clean) == \
        ("home/meters", "gw2", 1, 5.0, True)
    assert (settings.user, settings.password, settings.ha_prefix) == ("u", "p", None)
    assert settings_from_args(args("-b", "h", "--ha-discovery")).ha_prefix == "homeassistant"


def test_home_assistant_gets_a_rate_its_recorder_can_live_with_unless_asked_otherwise():
    assert settings_from_args(args("-b", "h")).rate == 0.0                        # every reading
    assert settings_from_args(args("-b", "h", "--ha-discovery")).rate == HA_RATE  # a state every 30 s
    assert settings_from_args(args("-b", "h", "--ha-discovery", "-r", "0")).rate == 0.0   # the fast path
    assert settings_from_args(args("-b", "h", "--ha-discovery", "-r", "5")).rate == 5.0


@pytest.mark.parametrize("argv,message", [
    (["-t", "a/#"], "topic"), (["-t", "/a"], "topic"), (["-r", "-1"], "rate"), (["--mqtt-queue", "0"], "queue"),
    (["--mqtt-ca", "/nonexistent.pem"], "mqtt-ca"), (["--ha-discovery", "--ha-prefix", "+"], "topic"),
])
def test_bad_mqtt_flags_say_why(argv, message):
    with pytest.raises(ValueError, match=message):
        settings_from_args(args("-b", "tcp://127.0.0.1:1883", *argv))


@given(st.text(max_size=30))
def test_topic_safe_leaves_no_wildcard_separator_or_space(text):
    safe = topic_safe(text)
    assert safe and not any(c in safe for c in "#+/\x00") and not any(c.isspace() for c in safe)
    assert topic_safe(safe) == safe


def test_topics_of_a_meter():
    topics = Topics(check_base("sdm630"))
    assert topics.state("Meter #1") == "sdm630/Meter_1/state"
    assert topics.availability("a/b") == "sdm630/a_b/availability"
    assert topics.value("Instrument1", "VolLocPhsA") == "sdm630/Instrument1/VolLocPhsA"
    assert topics.status == "sdm630/status"


def test_the_sdm630_alias_of_old_systemd_units_runs_the_daemon():
    done = subprocess.run([str(Path(sys.executable).parent / "sdm630"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "--broker" in done.stdout and "--serialadapter" in done.stdout
