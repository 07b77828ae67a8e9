"""Every HTTP door narrow (README "Hostile clients"): framing, paths, redirects, error bodies,
static files, the head deadline, the connection cap, CORS, quiet logs, running out of files.

An in-process server on loopback; requests are raw bytes, so nothing is tidied on the way.
"""

import errno
import json
import logging
import os
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdm import server as server_module
from sdm.api import guard, inside_web_root, make_app
from sdm.config import HttpConfig
from sdm.hub import Hub, MeterConfig
from sdm.meters.registry import lookup
from sdm.quietlog import RepeatLog
from sdm.server import framing_problem, make_server, path_problem
from sdm.streams import Streams
from tests.sdm.test_http_input import send
from tests.support import wait_until


def serve(**limits):
    hub = Hub([MeterConfig(1, "SDM630", lookup("sdm630"), "Instrument1")])
    hub.publish("Instrument1", {"VolLocPhsA": 230.5})
    streams = Streams(hub, status_interval=3600)
    http = HttpConfig(**limits)
    server = make_server(guard(streams.mount(make_app(hub)), http.cors), "127.0.0.1:0", limits=http)
    server.start()
    return server, streams


@pytest.fixture
def gateway(request, monkeypatch):
    monkeypatch.setattr(server_module, "quiet", RepeatLog(logging.getLogger(server_module.__name__)))
    server, streams = serve(**getattr(request, "param", {}))
    yield server
    streams.stop()
    server.stop(timeout=1)


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Everything the server sends back for ``raw`` until it closes (or goes quiet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
        except socket.timeout:
            return data


SMUGGLING = [
    b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 38\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 38\r\n\r\n0\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: +38\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: -0\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: x\r\nNo colon here\r\nContent-Length: 38\r\n\r\n",
]


@pytest.mark.parametrize("head", SMUGGLING)
def test_ambiguous_framing_is_a_400_and_never_a_second_request(gateway, head):
    hidden = b"GET /last/1 HTTP/1.1\r\nHost: x\r\n\r\n"       # 38 bytes: a body, or a second request?
    answer = exchange(gateway.address[1], head + hidden)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, "one message, one answer, then the connection closes"
    assert b"malformed HTTP request" in answer


@pytest.mark.parametrize("path", ["/metr%ffics", "/last/%c3", "/last/Instrument%801", "/st%e9tus"])
def test_a_path_that_is_not_utf8_is_a_400(gateway, path):
    answer = exchange(gateway.address[1], f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"not UTF-8" in answer


def test_utf8_paths_still_reach_the_routes(gateway):
    answer = exchange(gateway.address[1], b"GET /last/Instrument%31 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")


@given(target=st.text(max_size=30).map(lambda t: "/" + t))
def test_path_problem_never_raises_and_accepts_what_decodes(target):
    latin = target.encode("utf-8").decode("latin-1")      # what pywsgi hands over
    assert path_problem(latin) is None


@settings(max_examples=200)
@given(raw=st.binary(max_size=20))
def test_percent_escaped_bytes_are_refused_exactly_when_they_are_not_utf8(raw):
    target = "/x" + "".join(f"%{b:02x}" for b in raw)
    try:
        raw.decode("utf-8")
        expected = None
    except UnicodeDecodeError:
        expected = "the path is not UTF-8"
    assert path_problem(target) == expected


def test_framing_problem_accepts_ordinary_heads():
    import http.client
    import io
    head = io.BytesIO(b"Host: x\r\nContent-Length: 12\r\nAccept: */*\r\n\r\n")
    assert framing_problem(http.client.parse_headers(head)) is None


def test_redirects_are_relative_whatever_the_host_header(gateway):
    answer = exchange(gateway.address[1], b"GET /last/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 301 ")
    assert b"\r\nLocation: /last\r\n" in answer
    assert b"evil" not in answer


@pytest.mark.parametrize("target", ["/last/" + "9" * 8000, "/last/" + "0" * 6000 + "300", "/minuteavg/" + "7" * 5000,
                                    "/last/" + "x" * 6000, "/nothing/" + "y" * 6000])
def test_error_bodies_are_short_and_ours(gateway, target):
    answer = exchange(gateway.address[1], f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] in (b"400", b"404")
    assert len(body) < 200 and "error" in json.loads(body)
    assert b"Exceeds the limit" not in body


def test_static_files_resolve_inside_the_web_folder(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    (web / "app.js").write_text("ok")
    (tmp_path / "secret.js").write_text("secret")
    (web / "out.js").symlink_to(tmp_path / "secret.js")
    (web / "in.js").symlink_to(web / "app.js")
    (web / "dir.js").mkdir()
    os.mkfifo(web / "fifo.js")
    assert inside_web_root("app.js", str(web)) == str(web / "app.js")
    assert inside_web_root("in.js", str(web)) == str(web / "app.js")       # a link inside is fine
    for name in ("out.js", "dir.js", "fifo.js", "../secret.js", "missing.js", "/etc/passwd", "\x00/app.js", "a\x00.js"):
        assert inside_web_root(name, str(web)) is None, name


@pytest.mark.parametrize("gateway", [{"head_timeout": 0.5}], indirect=True)
def test_a_request_head_sent_a_byte_at_a_time_is_cut_at_the_head_deadline(gateway):
    with socket.create_connection(("127.0.0.1", gateway.address[1]), timeout=5) as sock:
        started = time.monotonic()
        answer = b""
        try:
            for byte in b"GET /last/1 HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))   # each byte well within the idle timeout
                time.sleep(0.05)
        except OSError:
            pass
        try:
            answer = sock.recv(4096)
        except OSError:
            pass
        assert time.monotonic() - started < 3.0
    assert answer.startswith(b"HTTP/1.1 408 ") and b"head not complete within 0.5 s" in answer


@pytest.mark.parametrize("gateway", [{"head_timeout": 0.3}], indirect=True)
def test_an_idle_keep_alive_connection_is_not_cut_by_the_head_deadline(gateway):
    with socket.create_connection(("127.0.0.1", gateway.address[1]), timeout=5) as sock:
        sock.sendall(b"GET /last/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.8)                  # longer than the head deadline, shorter than the idle timeout
        sock.sendall(b"GET /last/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("gateway", [{"head_timeout": 0.3}], indirect=True)
def test_a_connection_that_never_sends_a_byte_is_cut_at_the_head_deadline(gateway):
    with socket.create_connection(("127.0.0.1", gateway.address[1]), timeout=5) as sock:
        started = time.monotonic()
        answer = sock.makefile("rb").read()
        assert time.monotonic() - started < 2.0
    assert answer.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("gateway", [{"max_connections": 20, "max_ws_clients": 5, "max_long_polls": 5}],
                         indirect=True)
def test_connections_over_the_cap_wait_their_turn(gateway):
    held = [socket.create_connection(("127.0.0.1", gateway.address[1]), timeout=5) for _ in range(20)]
    try:
        for sock in held:
            sock.sendall(b"G")        # a request begun, never finished: each holds a slot
        wait_until(lambda: len(gateway.pool) == 20, 5, what="every slot taken")
        late = socket.create_connection(("127.0.0.1", gateway.address[1]), timeout=5)
        late.sendall(b"GET /last/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        late.settimeout(0.5)
        with pytest.raises(socket.timeout):
            late.recv(100)            # waits in the listen queue: the cap holds
        assert len(gateway.pool) == 20
        held.pop().close()            # a slot comes free: the waiting client is served
        late.settimeout(5)
        assert late.recv(100).startswith(b"HTTP/1.1 200 ")
        late.close()
    finally:
        for sock in held:
            sock.close()


def test_the_cap_leaves_a_reserve_of_file_descriptors(monkeypatch, caplog):
    monkeypatch.setattr(server_module.resource, "getrlimit", lambda _: (200, 4096))
    caplog.set_level(logging.WARNING)
    cap = server_module.connection_cap(512)
    assert cap <= 200 - server_module.FD_RESERVE - len(os.listdir("/proc/self/fd")) + 1
    assert "does not fit in the open-file limit 200" in caplog.text
    assert server_module.connection_cap(10) == 10


def test_running_out_of_files_is_one_error_line_and_accepting_pauses(gateway, monkeypatch, caplog):
    def no_files():
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(server_module.pywsgi.WSGIServer, "do_read", lambda self: no_files())
    caplog.set_level(logging.INFO)
    for _ in range(5):
        assert gateway.do_read() is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "out of file descriptors" in errors[0].getMessage()
    assert "Too many open files" in errors[0].getMessage()
    monkeypatch.undo()
    wait_until(lambda: send(gateway.address[1], b"GET /last/1 HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200, 5,
               what="accepting again")


@pytest.mark.parametrize("gateway,expected", [({}, "*"), ({"cors": ""}, None),
                                              ({"cors": "http://dash.lan"}, "http://dash.lan")],
                         indirect=["gateway"])
def test_cors_is_what_the_configuration_says(gateway, expected):
    for target in ("/last/1", "/status", "/nothing", "/metrics", "/firehose?timeout=1&category=all"):
        _, headers, _ = send(gateway.address[1], f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert headers.get("access-control-allow-origin") == expected, target
    _, headers, _ = send(gateway.address[1], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "access-control-allow-origin" not in headers       # the page is ours alone


def test_repeated_bad_requests_are_one_log_line_with_a_count(gateway, caplog):
    caplog.set_level(logging.INFO, logger=server_module.__name__)
    for _ in range(30):
        exchange(gateway.address[1], b"GET /status HTTP/1.1\r\nNo colon\r\n\r\n")
    lines = [r for r in caplog.records if "bad request" in r.getMessage()]
    assert len(lines) == 1


def test_repeat_log_counts_what_it_left_out(caplog):
    now = [0.0]
    quiet = RepeatLog(logging.getLogger("test.quiet"), interval=10, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="test.quiet")
    assert quiet.log(logging.INFO, "bad requests", "first %d", 1)
    assert not any(quiet.log(logging.INFO, "bad requests", "again") for _ in range(7))
    assert quiet.log(logging.INFO, "other things", "another kind")
    now[0] = 10.0
    assert quiet.log(logging.INFO, "bad requests", "later")
    assert [r.getMessage() for r in caplog.records] == [
        "first 1", "another kind", "later (7 more bad requests since the last such line)"]
