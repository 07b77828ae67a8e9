"""The gevent internals sdm.compat.gevent_monkey relies on (each check in a fresh interpreter:
monkey-patching is once per process)."""

import subprocess
import sys

import pytest


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_patch_all_announces_its_steps_through_the_replaced_function():
    code = """
from gevent import events, monkey
seen = []
events.notify_and_call_entry_points = lambda event: seen.append(type(event).__name__)
monkey.patch_all()
print(",".join(seen))
"""
    assert "GeventWillPatchAllEvent" in run(code).split(",")


@pytest.mark.parametrize("subscribed", ["GeventWillPatchAllEvent", "GeventDidPatchAllEvent"])
def test_the_shortcut_still_tells_subscribers_and_puts_the_function_back(subscribed):
    code = f"""
import socket
from gevent import events
original = events.notify_and_call_entry_points
seen = []
events.subscribers.append(lambda event: seen.append(type(event).__name__))
from sdm.compat.gevent_monkey import patch_all_without_plugins
patch_all_without_plugins()
from gevent import monkey
print("{subscribed}" in seen, monkey.is_module_patched("socket"), events.notify_and_call_entry_points is original)
"""
    assert run(code) == "True True True"
