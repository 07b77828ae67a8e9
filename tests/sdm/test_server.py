"""Listen addresses and TCP_NODELAY."""

import http.client
import socket

import pytest

from sdm.server import NoDelayHandler, listener, make_server, parse_listen


@pytest.mark.parametrize("url,expected", [
    (":8080", ("", 8080)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:8080", ("::1", 8080)),
    ("http://localhost:9000/", ("localhost", 9000)),
])
def test_parse_listen(url, expected):
    assert parse_listen(url) == expected


@pytest.mark.parametrize("url", ["8080", "host:port", ":70000"])
def test_parse_listen_refuses_nonsense(url):
    with pytest.raises(ValueError):
        parse_listen(url)


def test_accepted_connections_have_nodelay():
    sock = listener("127.0.0.1:0")
    sock.setblocking(True)
    try:
        client = socket.create_connection(sock.getsockname())
        conn, _ = sock.accept()
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        conn.close()
        client.close()
    finally:
        sock.close()


def serve(app):
    server = make_server(app, "127.0.0.1:0")
    server.start()
    return server


@pytest.mark.parametrize("chunks,length", [
    ([b'{"a":1}\n'], True),                          # short: headers and body in one send
    ([b"x" * (NoDelayHandler.ONE_SEND_MAX + 10)], True),           # long: two sends
    ([b"first,", b"second"], False),                 # no length: chunked framing
])
def test_answers_arrive_whole_however_they_are_sent(chunks, length):
    body = b"".join(chunks)

    def app(environ, start_response):
        headers = [("Content-Type", "text/plain")] + ([("Content-Length", str(len(body)))] if length else [])
        start_response("200 OK", headers)
        return (chunk for chunk in chunks)   # a generator: pywsgi cannot know the length

    server = serve(app)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=5)
        for _ in range(2):   # twice on one keep-alive connection
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == body
            assert (response.getheader("Transfer-Encoding") == "chunked") is not length
        conn.close()
    finally:
        server.stop()
