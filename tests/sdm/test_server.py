"""Listen addresses and TCP_NODELAY."""

import socket

import pytest

from sdm.server import listener, parse_listen


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
