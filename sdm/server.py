"""The HTTP server: gevent's pywsgi with TCP_NODELAY, websockets enabled on /ws only.

Requests pywsgi or gevent-websocket refuse before the application runs (a
request line over 8 KiB, too many headers, a bad Content-Length, a broken
websocket handshake) get a JSON error too, like every other error.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
from http import HTTPStatus
from typing import Optional, Tuple

import gevent
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

from .api import JSON_TYPE
from .compat.gevent_pywsgi import PywsgiOverrides
from .readings import dumps

log = logging.getLogger(__name__)

WS_PATH = "/ws"
IDLE_TIMEOUT = 60.0   # s a connection may stay silent inside a request or between two (streams set their own)


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


def error_response(status: int, message: str) -> bytes:
    """A complete HTTP response with a JSON error body, closing the connection."""
    body = dumps({"error": message})
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nConnection: close\r\n"
            f"Content-Type: {JSON_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def handshake_problem(environ: dict, version: str) -> Optional[str]:
    """Why a websocket upgrade request cannot be accepted, None when it can."""
    if version != "HTTP/1.1":
        return "a websocket needs HTTP/1.1"
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") not in WebSocketHandler.SUPPORTED_VERSIONS:
        return "unsupported Sec-WebSocket-Version (13 is)"
    try:
        key = base64.b64decode(environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


class NoDelayHandler(PywsgiOverrides, WebSocketHandler):
    """Sets TCP_NODELAY on each connection too (not every platform inherits it);
    upgrades only /ws, and answers every refusal in JSON (through sdm.compat.gevent_pywsgi)."""

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.settimeout(IDLE_TIMEOUT)   # a connection stuck mid-request does not live for ever
        super().__init__(sock, address, server, rfile)

    def request_line_refused(self) -> bytes:
        return error_response(414, f"request line longer than {pywsgi.MAX_REQUEST_LINE} bytes")

    def client_error(self, ex: BaseException) -> Tuple[str, bytes]:
        """A request pywsgi cannot parse: one log line (no traceback), JSON 400 (408 for one left
        unfinished)."""
        log.info("bad request from %s: %s", self.client_address[0] if self.client_address else "?",
                 getattr(ex, "formatted_message", None) or repr(ex))
        if isinstance(ex, socket.timeout):
            return "408", error_response(408, f"request not completed within {IDLE_TIMEOUT:g} s")
        return "400", error_response(400, "malformed HTTP request")

    def upgrade_websocket(self):
        """Only /ws is a websocket; a broken handshake there is a JSON 400 (the library answers
        these in text, and crashes on some of them)."""
        environ = self.environ
        if environ.get("PATH_INFO") != WS_PATH or environ.get("REQUEST_METHOD") != "GET":
            return None
        if (environ.get("HTTP_UPGRADE", "").lower() != "websocket"
                or "upgrade" not in environ.get("HTTP_CONNECTION", "").lower()):
            return None
        problem = handshake_problem(environ, self.request_version)
        if problem is None:
            return super().upgrade_websocket()
        body = dumps({"error": problem})
        self.start_response("400 Bad Request", [
            ("Content-Type", JSON_TYPE), ("Content-Length", str(len(body))),
            ("Sec-WebSocket-Version", ", ".join(self.SUPPORTED_VERSIONS))])
        return [body]

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


def make_server(app, url: str, access_log: bool = False) -> pywsgi.WSGIServer:
    return pywsgi.WSGIServer(listener(url), app, handler_class=NoDelayHandler,
                             log=log if access_log else None, error_log=log)
