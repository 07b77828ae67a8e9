"""REST routes and the static page, on top of the hub (bottle, in-process testable).

Every answer is JSON except the page and its assets; every error is a JSON
``{"error": ...}`` with a 4xx status (or 503 for an unavailable meter), never
a traceback, and short: what a client sent is echoed at most ``ECHO_MAX``
characters. Redirects are relative (never built from the Host header); the
page's files are regular files inside the web folder, never a symlink out of
it. The expensive answers (/minuteavg, /metrics) are computed at most once
per change of the hub (sdm.answers), not per request. :func:`guard` sets the
configured CORS header on every answer.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from typing import Callable, Optional

import bottle

from .answers import OncePerChange
from .hub import AVAILABLE, Hub, MeterState
from .meters.registry import MAX_SLAVE_ID, parse_slave_id
from .metrics import add_metrics_route
from .readings import dumps
from .status import status

log = logging.getLogger(__name__)


def find_web_root() -> str:
    """The page's folder: ``sdm/web`` in an installed package (setup.py maps the top-level ``web/``
    there), else ``web/`` beside ``sdm/`` in a checkout or an editable install."""
    here = Path(__file__).resolve().parent
    packaged = here / "web"
    return str(packaged if (packaged / "index.html").is_file() else here.parent / "web")


WEB_ROOT = find_web_root()
JSON_TYPE = "application/json; charset=UTF-8"
ASSET_TYPES = (".html", ".js", ".css", ".svg")
CORS_HEADER = "Access-Control-Allow-Origin"
ECHO_MAX = 40          # characters of a client's input an error message repeats


def shown(text: str) -> str:
    """A client's input as an error message may quote it: at most ECHO_MAX characters."""
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX] + f"... ({len(text)} characters)"


class ApiError(bottle.HTTPError):
    """An error answer with a JSON body."""

    def __init__(self, status: int, message: str, **extra):
        body = {"error": message, **extra}
        super().__init__(status, dumps(body))
        self.set_header("Content-Type", JSON_TYPE)


def json_response(body: bytes) -> bytes:
    bottle.response.content_type = JSON_TYPE
    return body


def _error_body(error: bottle.HTTPError) -> bytes:
    """Bottle's own errors (no route, wrong method, crash) as JSON without a traceback."""
    if isinstance(error, ApiError):
        return error.body
    if error.status_code >= 500:
        log.error("internal error answering %s %s: %r", bottle.request.method,
                  bottle.request.path, error.exception)
        message = "internal error"
    elif error.status_code == 404:
        message = f"no such resource: {shown(bottle.request.path)}"
    elif error.status_code == 405:
        message = f"method {shown(bottle.request.method)} not allowed here"
    else:
        message = shown(str(error.body)) or bottle.HTTP_CODES.get(error.status_code, "error")
    error.set_header("Content-Type", JSON_TYPE)
    return dumps({"error": message})


def find_meter(hub: Hub, key: str) -> MeterState:
    """The meter a route names: by name, or by MODBUS id when exactly one bus has that id.

    Names are never all digits, so ``/last/1`` is always an id.  ApiError: 400 for
    an id out of range, 404 for no such meter, 409 when several buses have the id.
    """
    digits = key.strip()
    if not (digits.isascii() and digits.isdigit()):
        found = hub.meters.get(key)
        if found is None:
            raise ApiError(404, f"Device {shown(key)} does not exist.")
        return found
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(MAX_SLAVE_ID)):      # never int() thousands of digits
        raise ApiError(400, f"meter id {shown(digits)} is out of range 1-{MAX_SLAVE_ID}")
    try:
        device_id = parse_slave_id(significant)
    except ValueError as err:
        raise ApiError(400, str(err)) from None
    matches = hub.with_id(device_id)
    if not matches:
        raise ApiError(404, f"Device {device_id} does not exist.")
    if len(matches) > 1:
        raise ApiError(409, f"Device {device_id} exists on {len(matches)} buses; ask for it by name.",
                       meters=[m.name for m in matches])
    return matches[0]


def last_all_body(hub: Hub) -> bytes:
    """The /last array: the cached Readings of every available meter."""
    return b"[" + b",".join(m.readings_json()[:-1] for m in hub.available()) + b"]\n"


RAW_FLAGS = {"1": True, "true": True, "0": False, "false": False, "": False}


def raw_asked() -> bool:
    """``?raw=1``: the values as read, before the checks of sdm.sanity (400 for another value)."""
    text = bottle.request.query.get("raw", "")
    if text.lower() not in RAW_FLAGS:
        raise ApiError(400, "raw must be 1 or 0")
    return RAW_FLAGS[text.lower()]


def make_app(hub: Hub, bus_label: bool = False) -> bottle.Bottle:
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    app.default_error_handler = _error_body

    def meter(key: str, require_available: bool = True) -> MeterState:
        found = find_meter(hub, key)
        if require_available and found.status != AVAILABLE:
            age = found.age()
            raise ApiError(503, f"Device {shown(key)} is not available.",
                           age=None if age is None else round(age, 3))
        return found

    def slash_redirect(path: str) -> None:
        """Relative, so never built from the Host header (bottle.redirect makes it absolute)."""
        raise bottle.HTTPResponse(status=301, Location="/" + path.rstrip("/"))

    def averages() -> bytes:
        now = time.time()
        return dumps([m.minute_average(now) for m in hub.available()])

    averages_once = OncePerChange(averages, hub)

    @app.get("/last")
    def last_all():
        return json_response(last_all_body(hub))

    @app.get("/last/<id_text>")
    def last_one(id_text):
        found = meter(id_text)
        return json_response(found.raw_readings_json() if raw_asked() else found.readings_json())

    @app.get("/minuteavg")
    def average_all():
        return json_response(averages_once.get())

    @app.get("/minuteavg/<id_text>")
    def average_one(id_text):
        return json_response(dumps(meter(id_text).minute_average()))

    @app.get("/status")
    def status_route():
        return json_response(dumps(status(hub)))

    @app.get("/")
    def index():
        return web_file("index.html")

    @app.get("/static/<path:path>")
    def assets(path):
        if not path.endswith(ASSET_TYPES):
            raise ApiError(404, f"no such asset: {shown(path)}")
        return web_file(path)

    add_metrics_route(app, hub, bus_label)
    for prefix in ("last", "minuteavg", "status"):
        app.route(f"/{prefix}/", "GET", _bind(slash_redirect, prefix))
    return app


def inside_web_root(path: str, root: str = WEB_ROOT) -> Optional[str]:
    """The real path of ``path`` under ``root`` when it is a regular file there after every symlink
    is resolved; None otherwise (outside, a directory, a device, a dangling link)."""
    real_root = os.path.realpath(root)
    try:    # ValueError: a NUL byte in the path, which realpath and stat both refuse
        real = os.path.realpath(os.path.join(real_root, path))
        if os.path.commonpath([real_root, real]) != real_root:
            return None
        return real if stat.S_ISREG(os.stat(real).st_mode) else None
    except (OSError, ValueError):
        return None


def web_file(path: str, root: str = WEB_ROOT):
    """One file of the page, or a JSON 404."""
    real = inside_web_root(path, root)
    if real is None:
        raise ApiError(404, f"no such asset: {shown(path)}")
    return bottle.static_file(os.path.relpath(real, os.path.realpath(root)), root=os.path.realpath(root))


def guard(app: Callable, cors: str = "*") -> Callable:
    """WSGI app around ``app`` giving every answer but the page's files and the websocket
    handshake the configured ``Access-Control-Allow-Origin`` (none when ``cors`` is "")."""
    header = [(CORS_HEADER, cors)] if cors else []

    def wsgi(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/" or path.startswith("/static/"):
            return app(environ, start_response)

        def with_cors(status, headers, exc_info=None):
            if not status.startswith("101"):
                headers = [h for h in headers if h[0].lower() != CORS_HEADER.lower()] + header
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)
        return app(environ, with_cors)

    return wsgi


def _bind(func: Callable, arg: str) -> Callable:
    return lambda: func(arg)


def fast_last(hub: Hub, app: Callable) -> Callable:
    """WSGI app answering the routes clients poll hardest, GET /last and GET /last/{id},
    straight from the hub's cached JSON, without bottle's per-request work.

    Only a plain success is answered here, with the same headers as the bottle
    route; anything else (errors, other routes and methods) goes to ``app``.
    """
    def headers(body: bytes) -> list:
        return [("Content-Type", JSON_TYPE), ("Content-Length", str(len(body)))]

    def body_for(path: str) -> Optional[bytes]:
        if path == "/last":
            return last_all_body(hub)
        if not path.startswith("/last/"):
            return None
        try:
            found = find_meter(hub, path[len("/last/"):])
        except ApiError:
            return None
        return found.readings_json() if found.status == AVAILABLE else None

    def wsgi(environ, start_response):
        plain = environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING")
        body = body_for(environ.get("PATH_INFO", "")) if plain else None
        if body is None:
            return app(environ, start_response)
        start_response("200 OK", headers(body))
        return [body]

    return wsgi
