"""Bad HTTP input over a real socket: never a 500, never a traceback, every refusal a JSON 4xx.

The server is the gateway's own (pywsgi with our handler, REST routes and the
streams) in this process; requests are written byte by byte as a client might,
so what pywsgi and gevent-websocket refuse before the application runs is
covered too.
"""

import http.client
import json
import socket
import string
import time
import urllib.parse
from pathlib import Path

import gevent
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdm import server as server_module
from sdm.api import WEB_ROOT, make_app
from sdm.hub import Hub, MeterConfig
from sdm.meters.registry import lookup
from sdm.server import make_server
from sdm.streams import Streams
from sdm.streams.ws import WsSettings

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def port():
    hub = Hub([MeterConfig(1, "SDM630", lookup("sdm630"), "Instrument1"),
               MeterConfig(26, "JANITZA", lookup("janitza"), "Instrument26")])
    hub.publish("Instrument1", {"VolLocPhsA": 230.5, "Freq": 50.0})
    streams = Streams(hub, WsSettings(max_clients=5), status_interval=3600, max_long_polls=5)
    server = make_server(streams.mount(make_app(hub)), "127.0.0.1:0")
    server.start()
    yield server.address[1]
    streams.stop()
    server.stop(timeout=1)


def send(port: int, raw: bytes, method: str = "GET", timeout: float = 15.0):
    """Write ``raw`` and read one response: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:     # the server may answer and close before reading everything
            pass
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        headers = {k.lower(): v for k, v in response.getheaders()}
        body = b"" if response.status == 101 else response.read()
        return response.status, headers, body


def assert_no_server_error(status: int, headers: dict, body: bytes, method: str = "GET") -> None:
    """The property: below 500, and a refusal is a JSON object with an ``error`` text."""
    assert status < 500, (status, body[:200])
    assert b"Traceback" not in body
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), (status, headers)
        if method != "HEAD":
            assert isinstance(json.loads(body)["error"], str)


TOKEN = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=10)
LATIN1 = st.characters(codec="latin-1", exclude_characters="\r\n")
METHODS = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
                                     "CONNECT", "get"]), TOKEN)
SEGMENTS = st.one_of(
    st.sampled_from(["last", "minuteavg", "status", "static", "ws", "firehose", "", ".", "..", "%2e%2e", "%2F",
                     "%00", "%ff", "%", "%%", "index.html", "app.js", "style.css", "1", "26", "9", "0", "248",
                     "-1", "01", "+1", "1_0", "%201", "1e3", "%D9%A1", "\u00e9"]),
    st.integers(-10 ** 30, 10 ** 30).map(str),
    st.text(LATIN1, max_size=12))
PATHS = st.lists(SEGMENTS, max_size=5).map(lambda parts: "/" + "/".join(parts))
KEYS = st.one_of(st.sampled_from(["timeout", "category", "since_time", "format"]), st.text(LATIN1, max_size=8))
VALUES = st.one_of(st.sampled_from(["", "0", "1", "-1", "121", "abc", "all", "meterupdate", "statusupdate",
                                    "frames", "readings", "1.5", "%zz", "9" * 30, "-9" * 20]),
                   st.text(LATIN1, max_size=12))
QUERIES = st.one_of(st.just(""), st.lists(st.tuples(KEYS, VALUES), max_size=4).map(
    lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs)))
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "", "HTTP/2.0", "HTTP/1.x", "HTTP/0.9", "FOO"])
HEADER_NAMES = st.one_of(st.sampled_from([
    "Host", "Content-Length", "Transfer-Encoding", "Upgrade", "Connection", "Sec-WebSocket-Version",
    "Sec-WebSocket-Key", "Expect", "Accept-Encoding", "Origin", "Range", "If-Modified-Since", "Cookie"]), TOKEN)
HEADER_VALUES = st.one_of(st.sampled_from([
    "websocket", "Upgrade", "keep-alive, Upgrade", "13", "8", "99", "chunked", "100-continue", "gzip", "0", "-1",
    "abc", "999999999999", "dGhlIHNhbXBsZSBub25jZQ==", "bytes=0-10", "bytes=9-1", "close",
    "Thu, 01 Jan 2099 00:00:00 GMT", "not a date"]), st.text(LATIN1, max_size=30))
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6)
BODIES = st.one_of(st.just(b""), st.binary(max_size=64))


def request_bytes(method: str, target: str, version: str, headers, body: bytes) -> bytes:
    line = f"{method} {target} {version}".rstrip()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (line + "\r\n" + head + "\r\n").encode("latin-1") + body


@PROPERTY
@given(method=METHODS, path=PATHS, query=QUERIES, version=VERSIONS, headers=HEADERS, body=BODIES)
def test_any_request_gets_an_answer_below_500_and_refusals_in_json(port, method, path, query, version, headers,
                                                                   body):
    raw = request_bytes(method, path + query, version, headers, body)
    assert_no_server_error(*send(port, raw, method), method)


@PROPERTY
@given(id_text=st.one_of(st.integers(-10 ** 25, 10 ** 25).map(str),
                         st.text(st.characters(exclude_characters="/", exclude_categories=("Cs",)), min_size=1,
                                 max_size=12)),
       route=st.sampled_from(["last", "minuteavg"]))
def test_meter_keys_are_a_meter_a_404_or_a_400(port, id_text, route):
    """All digits: an id (400 out of range); anything else: a meter name (these have none)."""
    target = f"/{route}/{urllib.parse.quote(id_text, safe='')}"
    status, headers, body = send(port, request_bytes("GET", target, "HTTP/1.1", [], b""))
    assert_no_server_error(status, headers, body)
    digits = id_text.strip()
    number = int(digits) if digits.isascii() and digits.isdigit() else None
    if number is None:
        expected = 200 if id_text in ("Instrument1", "Instrument26") else 404
    else:
        expected = 400 if not 1 <= number <= 247 else 200 if number in (1, 26) else 404
    assert status == expected, (id_text, body)


WEB_FILES = {path.read_bytes() for path in Path(WEB_ROOT).rglob("*") if path.is_file()}
TRAVERSALS = ["..", "%2e%2e", "%2E%2E", ".%2e", "%252e%252e", "..%2f..", "..%5c..", "..\\..", "....//", "./..",
              "%c0%ae%c0%ae", "%2f", "", ".", "web", "sdm", "tests", "setup.py", "etc", "passwd", "api.py"]


@PROPERTY
@given(parts=st.lists(st.one_of(st.sampled_from(TRAVERSALS), st.text(LATIN1, max_size=6)), max_size=6),
       name=st.sampled_from(["setup.py", "README.md", "api.py", "passwd", "x.js", "index.html", "app.js",
                             "style.css", "conftest.py.css", "Makefile.svg"]))
def test_static_files_never_come_from_outside_web(port, parts, name):
    for prefix in ("/static/", "/"):
        status, headers, body = send(port, request_bytes("GET", prefix + "/".join(parts + [name]), "HTTP/1.1",
                                                         [], b""))
        assert_no_server_error(status, headers, body)
        if status == 200:
            assert body in WEB_FILES or headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("target", [
    "/static/../setup.py", "/static/%2e%2e/setup.py", "/static/..%2fsetup.py.js", "/static/%2e%2e%2fsdm%2fapi.py",
    "/static/../../../../etc/passwd", "/static//etc/passwd.js", "/static/..\\..\\setup.py", "/../setup.py",
    "/static/%252e%252e/setup.py", "/static/web/../../setup.py.css", "/static/.%2e/.%2e/etc/hostname.svg",
])
def test_path_traversal_is_refused(port, target):
    status, headers, body = send(port, request_bytes("GET", target, "HTTP/1.1", [("Host", "x")], b""))
    assert 400 <= status < 500
    assert_no_server_error(status, headers, body)


@pytest.mark.parametrize("raw,expected", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /status HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 400),
    (b"GET /status HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % n for n in range(150)) + b"\r\n", 400),
    (b"POST /last/1 HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000000, 405),
    (b"GET /status HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
    (b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
     b"Sec-WebSocket-Key: not-base64!\r\n\r\n", 400),
    (b"GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 400),
    (b"GET /ws HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n", 400),   # TLS hello
])
def test_oversized_and_malformed_requests_get_a_json_4xx(port, raw, expected):
    status, headers, body = send(port, raw)
    assert status == expected, body
    assert_no_server_error(status, headers, body)


def test_a_crowd_of_stuck_clients_does_not_stall_the_server(port):
    stuck = []
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /last/1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")   # never finished
        stuck.append(sock)
    try:
        started = time.monotonic()
        status, _, _ = send(port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200
        assert time.monotonic() - started < 1.0
    finally:
        for sock in stuck:
            sock.close()
    gevent.sleep(0)


def test_a_connection_silent_mid_request_is_closed_after_the_idle_timeout(port, monkeypatch):
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT", 0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\n")
        started = time.monotonic()
        answer = sock.makefile("rb").read()    # to the end: the server closes
        assert 0.2 < time.monotonic() - started < 3
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "request not completed within 0.3 s"}
