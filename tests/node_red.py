"""Node-RED from the npm registry (installed into .tools/ by `make prepare`), run with a flow of ours,
and what its debug nodes print, read from the editor's websocket as the sidebar would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List

import gevent
import websocket

from tests.support import ROOT, Process, free_port, http_request, wait_until

RED_JS = ROOT / ".tools" / "node_modules" / "node-red" / "red.js"

SETTINGS = """module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    flowFile: "flows.json",
    credentialSecret: false,
    diagnostics: {{ enabled: false }},
    editorTheme: {{ tours: false }},
    logging: {{ console: {{ level: "info" }} }},
}};
"""


def find_node_red() -> List[str]:
    """The command that starts Node-RED; `make test` (.ci/prepare) installs it, the tests never do."""
    node = shutil.which("node")
    if node is None or not RED_JS.is_file():
        raise RuntimeError("Node-RED not found: run `make prepare` (.ci/prepare) before the integration tests")
    return [node, str(RED_JS)]


class NodeRed(Process):
    """One Node-RED with a throw-away user directory holding the given flow."""

    def __init__(self, workdir: Path, flow: List[Dict[str, Any]]):
        self.port = free_port()
        self.debug: List[Dict[str, Any]] = []
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "settings.js").write_text(SETTINGS.format(port=self.port))
        (workdir / "flows.json").write_text(json.dumps(flow))
        super().__init__([*find_node_red(), "--userDir", str(workdir), "--settings", str(workdir / "settings.js")],
                         workdir / "node-red.log")

    def start(self) -> NodeRed:
        self.spawn()
        wait_until(self._started, 60, interval=0.2, what="Node-RED to start its flows")
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/comms", timeout=30)
        self.ws.send(json.dumps({"subscribe": "debug"}))
        self.reader = gevent.spawn(self._read)
        return self

    def _started(self) -> bool:
        assert self.proc.poll() is None, f"Node-RED exited:\n{self.log()}"
        if "Started flows" not in self.log():
            return False
        try:
            return http_request(self.port, "/flows", timeout=2).status == 200
        except OSError:
            return False

    def _read(self) -> None:
        while True:
            for message in json.loads(self.ws.recv()):
                if message.get("topic") == "debug":
                    self.debug.append(message["data"])

    def stop(self, timeout: float = 5.0):
        if getattr(self, "reader", None) is not None:
            self.reader.kill()
            self.ws.close()
        return super().stop(timeout)
