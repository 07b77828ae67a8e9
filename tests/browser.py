"""Headless Chromium (Debian's package) driven over the DevTools protocol with websocket-client."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import websocket

from tests.support import Process, free_port, http_request, wait_until

CHROMIUM_NAMES = ("chromium", "chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def find_chromium() -> str:
    """The chromium binary; `make test` (.ci/prepare) installs it, the tests never do."""
    found = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if found is None:
        raise RuntimeError("chromium not found: run `make prepare` (.ci/prepare) before the page tests")
    return found


class Browser(Process):
    """One headless Chromium with a throw-away profile and one page target."""

    def __init__(self, workdir: Path, width: int = 1280, height: int = 1400):
        self.port = free_port()
        super().__init__([find_chromium(), *FLAGS, f"--remote-debugging-port={self.port}",
                          f"--user-data-dir={workdir / 'profile'}", f"--window-size={width},{height}",
                          "about:blank"], workdir / "chromium.log")

    def start(self) -> Browser:
        self.spawn()
        wait_until(self._page_target, 30, interval=0.1, what="chromium's DevTools endpoint")
        return self

    def _page_target(self) -> str:
        assert self.proc.poll() is None, f"chromium exited:\n{self.log()}"
        try:
            targets = json.loads(http_request(self.port, "/json/list", timeout=2).body)
        except (OSError, ValueError):
            return ""
        return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), "")

    def page(self) -> Page:
        return Page(self._page_target())


class Page:
    """A DevTools session on one page: commands, and the events that arrive meanwhile."""

    def __init__(self, url: str):
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.last_id = 0
        self.events: List[Dict[str, Any]] = []

    def call(self, method: str, **params) -> Dict[str, Any]:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.last_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_errors(self) -> List[str]:
        """Console errors, uncaught exceptions and failed loads reported so far."""
        self.call("Runtime.evaluate", expression="0")     # collect what is pending
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"]))
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(json.dumps(params["args"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()
