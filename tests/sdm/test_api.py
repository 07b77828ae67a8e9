"""REST routes in-process (no sockets): statuses, JSON errors, CORS."""

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest

from sdm.api import fast_last, make_app
from sdm.hub import UNAVAILABLE, Hub, MeterConfig
from sdm.meters.registry import lookup


def call(app, path, method="GET"):
    environ = {}
    setup_testing_defaults(environ)
    path, _, query = path.partition("?")
    environ.update(PATH_INFO=path, REQUEST_METHOD=method, QUERY_STRING=query, **{"wsgi.input": io.BytesIO()})
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = {k.lower(): v for k, v in headers}

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


@pytest.fixture
def hub():
    h = Hub([MeterConfig(1, "SDM", lookup("sdm"), "Instrument1"), MeterConfig(26, "JANITZA", lookup("janitza"),
                                                                                 "Instrument26")])
    h.publish("Instrument1", {"VolLocPhsA": 230.5}, timestamp=1000.0)
    return h


def test_unavailable_meter_answers_503_with_the_age_of_its_last_reading(hub):
    hub.set_status("Instrument1", UNAVAILABLE)
    status, headers, body = call(make_app(hub), "/last/1")
    assert status == 503
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["error"] == "Device 1 is not available."
    assert answer["age"] > 0


def test_unavailable_meter_never_read_has_no_age(hub):
    hub.set_status("Instrument26", UNAVAILABLE)
    status, _, body = call(make_app(hub), "/minuteavg/26")
    assert status == 503 and json.loads(body)["age"] is None


def test_last_with_every_meter_down_is_an_empty_list(hub):
    hub.set_status("Instrument1", UNAVAILABLE)
    hub.set_status("Instrument26", UNAVAILABLE)
    app = make_app(hub)
    assert call(app, "/last")[2] == b"[]\n"
    assert call(app, "/minuteavg")[2] == b"[]\n"


def test_last_reading_before_the_first_read_is_all_null(hub):
    status, _, body = call(make_app(hub), "/last/26")
    assert status == 200
    assert json.loads(body)["Timestamp"] == "0001-01-01T00:00:00Z"


def test_page_and_assets_are_served_but_nothing_outside_web(hub):
    app = make_app(hub)
    status, headers, _ = call(app, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for path in ("/static/../setup.py", "/static/%2e%2e/setup.py", "/static/__init__.py", "/static/nope.js"):
        status, headers, body = call(app, path)
        assert status in (403, 404), path
        assert "error" in json.loads(body)


def test_internal_error_is_a_json_500_without_traceback(hub, monkeypatch):
    app = make_app(hub)
    monkeypatch.setattr(type(hub.meters["Instrument1"]), "readings_json", lambda self: 1 / 0)
    status, _, body = call(app, "/last/1")
    assert status == 500
    assert json.loads(body) == {"error": "internal error"}
    assert b"Traceback" not in body


@pytest.mark.parametrize("path", ["/last/1", "/last/01", "/last/26", "/last"])
def test_fast_last_answers_exactly_as_the_bottle_route(hub, path):
    app = make_app(hub)
    taken = []

    def bottle_side(environ, start_response):
        taken.append(environ["PATH_INFO"])
        return app(environ, start_response)

    fast = call(fast_last(hub, bottle_side), path)
    assert taken == []   # answered without bottle
    assert fast == call(app, path)
    assert fast[0] == 200


@pytest.mark.parametrize("path,method", [
    ("/last/9", "GET"), ("/last/abc", "GET"), ("/last/0", "GET"), ("/last/1/2", "GET"), ("/last/", "GET"),
    ("/minuteavg/1", "GET"), ("/last/1", "HEAD"), ("/last/1", "DELETE"), ("/lastx", "GET"),
])
def test_fast_last_leaves_everything_else_to_bottle(hub, path, method):
    app = make_app(hub)
    assert call(fast_last(hub, app), path, method) == call(app, path, method)


def test_fast_last_leaves_an_unavailable_meter_to_bottle(hub):
    hub.set_status("Instrument1", UNAVAILABLE)
    status, _, body = call(fast_last(hub, make_app(hub)), "/last/1")
    assert status == 503 and "error" in json.loads(body)
    assert [r["ModbusDeviceId"] for r in json.loads(call(fast_last(hub, make_app(hub)), "/last")[2])] == [26]


@pytest.mark.parametrize("wrap", [make_app, lambda hub: fast_last(hub, make_app(hub))])
def test_raw_1_shows_the_values_as_read_and_only_there(hub, wrap):
    hub.publish("Instrument1", {"VolLocPhsA": -3.4e38}, timestamp=1001.0)
    app = wrap(hub)
    assert json.loads(call(app, "/last/1")[2])["Voltage"]["L1"] is None
    assert json.loads(call(app, "/last/1?raw=1")[2])["Voltage"]["L1"] == -3.4e38
    assert json.loads(call(app, "/last/Instrument1?raw=0")[2])["Voltage"]["L1"] is None
    status, _, body = call(app, "/last/1?raw=yes")
    assert status == 400 and json.loads(body) == {"error": "raw must be 1 or 0"}
