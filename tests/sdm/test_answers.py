"""Expensive answers made once per change of the hub, with bounded staleness."""

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from sdm.answers import OncePerChange
from sdm.api import make_app
from sdm.hub import Hub, MeterConfig
from sdm.meters.registry import lookup
from sdm.metrics import HubCollector
from sdm.streams.firehose import Firehose
from tests.sdm.test_http_input import send


@given(steps=st.lists(st.tuples(st.floats(0, 3), st.booleans()), min_size=1, max_size=80))
def test_an_answer_is_made_once_per_change_and_never_older_than_bounded(steps):
    now, hub, made = [0.0], SimpleNamespace(changes=0), []

    def compute():
        made.append((now[0], hub.changes))
        return len(made)

    cached = OncePerChange(compute, hub, min_interval=0.5, max_age=5.0, clock=lambda: now[0])
    for pause, change in steps:
        now[0] += pause
        hub.changes += change
        before = len(made)
        assert cached.get() == len(made)
        if len(made) == before:                     # served from the cache
            age = now[0] - made[-1][0]
            assert age < 5.0                          # never older than max_age
            assert made[-1][1] == hub.changes or age < 0.5   # a change waits at most min_interval
    # never made twice for one state of the hub within min_interval
    for (t1, c1), (t2, c2) in zip(made, made[1:]):
        assert t2 - t1 >= 0.5 and (c2 != c1 or t2 - t1 >= 5.0)


def test_minuteavg_and_metrics_are_computed_once_for_many_requests(monkeypatch):
    hub = Hub([MeterConfig(1, "SDM630", lookup("sdm630"), "Instrument1")])
    hub.publish("Instrument1", {"VolLocPhsA": 230.0})
    calls = []
    original = type(hub.meters["Instrument1"]).minute_average

    def counted(self, now=None):
        calls.append(now)
        return original(self, now)

    monkeypatch.setattr(type(hub.meters["Instrument1"]), "minute_average", counted)
    app = make_app(hub)
    from gevent import pywsgi
    server = pywsgi.WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        bodies = {send(server.address[1], b"GET /minuteavg HTTP/1.1\r\nHost: x\r\n\r\n")[2] for _ in range(20)}
        assert len(bodies) == 1 and len(calls) == 1
        collected = []
        original_collect = HubCollector.collect
        monkeypatch.setattr(HubCollector, "collect", lambda self: collected.append(1) or original_collect(self))
        metrics = {send(server.address[1], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")[2] for _ in range(20)}
        assert len(metrics) == 1 and len(collected) == 1 and b"sdm_phase_voltage_volts" in metrics.pop()
    finally:
        server.stop()


def test_a_firehose_reply_from_one_cursor_is_built_once_per_publish():
    hub = Hub([MeterConfig(1, "SDM630", lookup("sdm630"), "Instrument1")])
    firehose = Firehose(hub)
    for n in range(50):
        hub.publish("Instrument1", {"VolLocPhsA": 230.0 + n, "Freq": 50.0})
    built = []
    original = firehose.buffer.newer
    firehose.buffer.newer = lambda *args, **kwargs: built.append(args) or original(*args, **kwargs)
    first = firehose._reply(("meterupdate",), 0)
    assert all(firehose._reply(("meterupdate",), 0) is first for _ in range(10)) and len(built) == 1
    hub.publish("Instrument1", {"VolLocPhsA": 1.0})
    again = firehose._reply(("meterupdate",), 0)
    assert len(built) == 2 and again != first and b'"Value":1.0' in again
