"""The HTTP server: gevent's pywsgi with TCP_NODELAY, websockets enabled on /ws only.

Requests pywsgi or gevent-websocket refuse before the application runs (a
request line over 8 KiB, too many headers, a bad Content-Length, a broken
websocket handshake) get a JSON error too, like every other error.

Every door is narrow (README "Hostile clients"): at most ``max_connections``
connections at a time (further clients wait in the listen queue), leaving a
reserve of file descriptors for the buses; a request head must be complete
within ``head_timeout`` s of its first byte; a request whose framing is
ambiguous (two Content-Lengths, Content-Length with Transfer-Encoding, a
header line without a colon, a signed length) or whose path is not UTF-8 is
a 400 and the connection closes, so one message never becomes two requests;
/ws opens only for the gateway's own pages, non-browser clients and the
configured origins. Bad requests are logged at most once a minute per kind.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import logging
import os
import resource
import socket
from email.message import Message
from http import HTTPStatus
from typing import Optional, Tuple
from urllib.parse import unquote_to_bytes, urlsplit

import gevent
from gevent import pywsgi
from gevent.pool import Pool
from geventwebsocket.handler import WebSocketHandler

from .api import JSON_TYPE
from .compat.gevent_pywsgi import PywsgiOverrides
from .config import HttpConfig
from .quietlog import RepeatLog
from .readings import dumps

log = logging.getLogger(__name__)
quiet = RepeatLog(log)

WS_PATH = "/ws"
IDLE_TIMEOUT = 60.0   # s a connection may stay silent inside a request or between two (streams set their own)
# File descriptors kept free of HTTP connections: serial adapters and TCP gateways being reopened,
# MQTT, state files, the log, the thread pool's pipes. Far more than a gateway with a few buses needs.
FD_RESERVE = 64
ACCEPT_PAUSE = 1.0    # s without accepting after the process ran out of file descriptors


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


class AmbiguousRequest(ValueError):
    """A request whose framing or path could be read in more than one way."""


class HeadTooSlow(socket.timeout):
    """A request head not complete within ``head_timeout`` s."""


def framing_problem(headers: Message) -> Optional[str]:
    """Why a request's headers could make one message read as two requests, None when they cannot."""
    if headers.defects:
        return "a malformed header line (one without a colon)"
    lengths = headers.get_all("Content-Length") or []
    if len(lengths) > 1:
        return "more than one Content-Length"
    if lengths and not (lengths[0].strip().isascii() and lengths[0].strip().isdigit()):
        return "a Content-Length that is not a plain number"
    codings = headers.get_all("Transfer-Encoding") or []
    if codings and lengths:
        return "both Content-Length and Transfer-Encoding"
    if codings and (len(codings) > 1 or codings[0].strip().lower() != "chunked"):
        return "a Transfer-Encoding other than chunked"
    return None


def path_problem(target: str) -> Optional[str]:
    """Why a request target's path is refused (not UTF-8 once decoded), None when it is fine.
    ``target`` is the request line's text, read as latin-1."""
    path = target.split("?", 1)[0]
    try:
        unquote_to_bytes(path.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        return "the path is not UTF-8"
    return None


def origin_allowed(origin: Optional[str], host: str, allowed: Tuple[str, ...]) -> bool:
    """May a page from ``origin`` open /ws on a gateway reached as ``host`` (the Host header)?

    No Origin: not a browser, let in. The gateway's own page: its origin names the host the
    browser connected to. Anything else only when configured (``ws_origins``, "*" for any).
    """
    if origin is None or "*" in allowed or origin.lower() in allowed:
        return True
    try:
        parts = urlsplit(origin.lower())
        ours = urlsplit("//" + host.lower())
        default = {"http": 80, "https": 443}.get(parts.scheme)
        return (parts.hostname is not None and parts.hostname == ours.hostname
                and (parts.port or default) == (ours.port or default))
    except ValueError:     # a port out of range or a broken IPv6 literal
        return False


class NoDelayHandler(PywsgiOverrides, WebSocketHandler):
    """Sets TCP_NODELAY on each connection too (not every platform inherits it);
    upgrades only /ws, and answers every refusal in JSON (through sdm.compat.gevent_pywsgi)."""

    _head_deadline: Optional[gevent.Timeout] = None
    _heads_read = 0            # request heads read on this connection

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.settimeout(IDLE_TIMEOUT)   # a connection stuck mid-request does not live for ever
        super().__init__(sock, address, server, rfile)

    @property
    def limits(self) -> HttpConfig:
        return getattr(self.server, "limits", None) or HttpConfig()

    def read_requestline(self):
        """Give a request's whole head ``head_timeout`` s from its first byte (from the connection's
        start for its first request): a client sending a byte now and then, or nothing at all,
        cannot hold a connection. Between two requests of a keep-alive connection the idle timeout
        applies until the next request's first byte."""
        late = HeadTooSlow(f"request head not complete within {self.limits.head_timeout:g} s")
        if self._heads_read:     # keep-alive: the idle timeout until the next request begins
            self.rfile.peek(1)
        self._head_deadline = gevent.Timeout.start_new(self.limits.head_timeout, late)
        try:
            return super().read_requestline()
        except socket.timeout as err:
            if err is late:     # pywsgi closes silently here: say why first, as for a late header
                self.client_error(err)
                with contextlib.suppress(OSError):
                    self.socket.sendall(error_response(408, str(err)))
            raise

    def read_request(self, raw_requestline):
        """pywsgi's parsing, with the head deadline and our checks of framing and path."""
        try:
            problem = path_problem(raw_requestline.split(" ", 2)[1]) if raw_requestline.count(" ") >= 2 else None
            if problem:
                raise AmbiguousRequest(problem)
            self._heads_read += 1
            return super().read_request(raw_requestline)
        finally:
            self._cancel_deadline()

    def MessageClass(self, *args):   # pywsgi's name: parses the headers; ours checks their framing too
        headers = super().MessageClass(*args)
        problem = framing_problem(headers) if not headers.status else None
        if problem:
            raise AmbiguousRequest(problem)
        return headers

    def handle_one_request(self):
        try:
            return super().handle_one_request()
        finally:
            self._cancel_deadline()    # also when the head never came (end of stream, a 414)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.close()
            self._head_deadline = None

    def request_line_refused(self) -> bytes:
        return error_response(414, f"request line longer than {pywsgi.MAX_REQUEST_LINE} bytes")

    def client_error(self, ex: BaseException) -> Tuple[str, bytes]:
        """A request pywsgi cannot parse: one log line (no traceback, at most one a minute),
        JSON 400 (408 for one left unfinished)."""
        why = str(ex)[:200] if isinstance(ex, (AmbiguousRequest, socket.timeout)) else repr(ex)[:200]
        quiet.log(logging.INFO, "bad requests", "bad request from %s: %s",
                  self.client_address[0] if self.client_address else "?",
                  getattr(ex, "formatted_message", None) or why)
        if isinstance(ex, HeadTooSlow):
            return "408", error_response(408, str(ex))
        if isinstance(ex, socket.timeout):
            return "408", error_response(408, f"request not completed within {IDLE_TIMEOUT:g} s")
        if isinstance(ex, AmbiguousRequest):
            return "400", error_response(400, f"malformed HTTP request: {ex}")
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
        if problem is None and not origin_allowed(environ.get("HTTP_ORIGIN"), environ.get("HTTP_HOST", ""),
                                                  self.limits.ws_origins):
            quiet.log(logging.WARNING, "refused websocket origins", "websocket from %s: refused origin %.100r",
                      environ.get("REMOTE_ADDR"), environ.get("HTTP_ORIGIN"))
            return self.refuse_upgrade("403 Forbidden", "this page's origin may not open /ws (see ws_origins)")
        if problem is None:
            return super().upgrade_websocket()
        return self.refuse_upgrade("400 Bad Request", problem)

    def refuse_upgrade(self, status: str, problem: str) -> list:
        body = dumps({"error": problem})
        self.start_response(status, [
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


def connection_cap(wanted: int, reserve: int = FD_RESERVE) -> int:
    """``wanted`` connections, or fewer when the open-file limit would leave less than ``reserve``
    descriptors for everything else (logged as a warning)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 16
    room = max(1, soft - open_now - reserve)
    if wanted > room:
        log.warning("max_connections %d does not fit in the open-file limit %d (%d open, %d kept for the "
                    "buses): at most %d HTTP connections; raise LimitNOFILE or lower max_connections",
                    wanted, soft, open_now, reserve, room)
        return room
    return wanted


class GatewayServer(pywsgi.WSGIServer):
    """pywsgi's server with our limits: a pool caps connections; running out of file descriptors
    is logged once and pauses accepting instead of printing a traceback per attempt."""

    def __init__(self, sock: socket.socket, app, limits: HttpConfig, **kwargs):
        self.limits = limits
        self.out_of_files = False
        super().__init__(sock, app, handler_class=NoDelayHandler,
                         spawn=Pool(connection_cap(limits.max_connections)), **kwargs)

    def do_read(self):
        try:
            return super().do_read()
        except OSError as err:
            if err.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            self.ran_out_of_files(err)
            return None

    def ran_out_of_files(self, err: OSError) -> None:
        """Stop accepting for a moment: the buses' reopening must find a descriptor."""
        if not self.out_of_files:
            self.out_of_files = True
            log.error("out of file descriptors accepting an HTTP connection (%s; limit %s, %d HTTP "
                      "connections open): new connections wait; raise LimitNOFILE or lower max_connections",
                      err.strerror, resource.getrlimit(resource.RLIMIT_NOFILE)[0], len(self.pool))
        self.stop_accepting()
        gevent.spawn_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        if not self.closed:
            self.start_accepting()


def make_server(app, url: str, access_log: bool = False, limits: Optional[HttpConfig] = None) -> GatewayServer:
    return GatewayServer(listener(url), app, limits or HttpConfig(listen=url),
                         log=log if access_log else None, error_log=log)
