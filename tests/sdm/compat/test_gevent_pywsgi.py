"""The parts of gevent.pywsgi that sdm.compat.gevent_pywsgi relies on, and its overrides.

Each test fails when a gevent release changes the private behaviour an override builds on.
"""

import socket
from typing import List

import pytest
from gevent import pywsgi

from sdm.compat.gevent_pywsgi import REQUEST_LINE_TOO_LONG, PywsgiOverrides

LONG_LINE = b"GET /" + b"a" * pywsgi.MAX_REQUEST_LINE + b" HTTP/1.1\r\n\r\n"
GARBAGE = b"NOT AN HTTP REQUEST\r\n\r\n"


def hello(environ, start_response):
    body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def exchange(handler_class, request: bytes, app=hello) -> bytes:
    """Send one raw request to a pywsgi server with that handler; everything it answers until it closes."""
    server = pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=handler_class, log=None, error_log=None)
    server.start()
    try:
        with socket.create_connection(server.address, timeout=5) as conn:
            conn.sendall(request + b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
    finally:
        server.stop()


def test_a_long_request_line_is_refused_through_the_returned_tuple():
    results: List[object] = []

    class Recording(pywsgi.WSGIHandler):
        def handle_one_request(self):
            results.append(super().handle_one_request())
            return results[-1]

    reply = exchange(Recording, LONG_LINE)
    assert isinstance(results[0], tuple) and results[0][0] == REQUEST_LINE_TOO_LONG, results
    assert reply == results[0][1] and reply.startswith(b"HTTP/1.1 414")


def test_an_unparseable_request_is_answered_by_handle_client_error():
    seen: List[BaseException] = []

    class Recording(pywsgi.WSGIHandler):
        def _handle_client_error(self, ex):
            seen.append(ex)
            return "400", b"HTTP/1.1 400 Ours\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    assert exchange(Recording, GARBAGE).startswith(b"HTTP/1.1 400 Ours\r\n")
    assert len(seen) == 1 and isinstance(seen[0], ValueError)


def test_the_first_write_goes_through_write_with_headers_then_sendall():
    calls: List[tuple] = []

    class Recording(pywsgi.WSGIHandler):
        def _write_with_headers(self, data):
            calls.append(("head", data, self.response_use_chunked))
            return super()._write_with_headers(data)

        def _sendall(self, data):
            calls.append(("send", bytes(data)))
            return super()._sendall(data)

    reply = exchange(Recording, b"")
    assert calls[0] == ("head", b"hello", False)
    sent = b"".join(call[1] for call in calls if call[0] == "send")
    assert reply == sent and reply.endswith(b"\r\n\r\nhello")


class Overridden(PywsgiOverrides):
    sends: List[bytes] = []

    def request_line_refused(self) -> bytes:
        return b"HTTP/1.1 414 Ours\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    def client_error(self, ex):
        return "400", b"HTTP/1.1 400 Ours\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    def _sendall(self, data):
        Overridden.sends.append(bytes(data))
        return super()._sendall(data)


@pytest.mark.parametrize("request_bytes,status_line", [(LONG_LINE, b"HTTP/1.1 414 Ours"),
                                                       (GARBAGE, b"HTTP/1.1 400 Ours")])
def test_the_overrides_answer_refusals_with_the_hooks(request_bytes, status_line):
    assert exchange(Overridden, request_bytes).startswith(status_line + b"\r\n")


@pytest.mark.parametrize("size,sends", [(5, 1), (PywsgiOverrides.ONE_SEND_MAX + 1, 2)])
def test_a_short_answer_leaves_in_one_send(size, sends):
    body = b"x" * size

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(size))])
        return [body]

    Overridden.sends = []
    reply = exchange(Overridden, b"", app)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\n" + body)
    assert len(Overridden.sends) == sends
