"""The HTTP server: gevent's pywsgi with TCP_NODELAY, websockets enabled."""

from __future__ import annotations

import logging
import socket
from typing import Tuple

import gevent
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

log = logging.getLogger(__name__)


def parse_listen(url: str) -> Tuple[str, int]:
    """``:8080``, ``127.0.0.1:8080``, ``[::1]:8080`` or ``http://host:port`` -> (host, port)."""
    text = url.split("://", 1)[-1].rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"listen address {url!r} has no port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen address {url!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen address {url!r}: port out of range")
    return host.strip("[]"), port


def listener(url: str) -> socket.socket:
    """A listening socket whose accepted connections inherit TCP_NODELAY.

    Without it every keep-alive answer waits ~40 ms for the client's delayed ACK.
    """
    host, port = parse_listen(url)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class NoDelayHandler(WebSocketHandler):
    """Sets TCP_NODELAY on each connection too (not every platform inherits it)."""

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().__init__(sock, address, server, rfile)

    def log_request(self):
        """One access-log line per request, only when the server was given a log."""
        if self.server.log is not None and "101" not in str(self.status):
            self.server.log.write(self.format_request() + "\n")

    def handle_one_response(self):
        """Answer one request, then give everyone else a turn.

        A keep-alive client that sends its next request at once finds it
        already there, so without a yield one connection could keep the loop
        (and the bus poller) waiting for as long as it keeps asking.
        """
        super().handle_one_response()
        gevent.sleep(0)

    ONE_SEND_MAX = 64 * 1024   # bodies up to this size go out with their headers in one send

    def _write_with_headers(self, data):
        """pywsgi's first write, but status line, headers and a small body in one send.

        pywsgi sends the headers and the body separately: two system calls and
        two packets for every short JSON answer, a tenth of the cost of a request.
        """
        self.headers_sent = True
        self.finalize_headers()
        head = b"".join([b"HTTP/1.1 ", self.status, b"\r\n",
                         *(name + b": " + value + b"\r\n" for name, value in self.response_headers), b"\r\n"])
        if self.response_use_chunked or not data or len(data) > self.ONE_SEND_MAX:   # ('' on a 101)
            self._sendall(head)
            self._write(data)
        else:
            self._sendall(head + data)


def make_server(app, url: str, access_log: bool = False) -> pywsgi.WSGIServer:
    return pywsgi.WSGIServer(listener(url), app, handler_class=NoDelayHandler,
                             log=log if access_log else None, error_log=log)
