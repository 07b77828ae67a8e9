"""gevent's monkey-patching without its plugin look-up (written for gevent 23.9 to 26.9; tested with 26.9.0).

``monkey.patch_all()`` announces each of its steps through ``gevent.events.notify_and_call_entry_points``,
which also loads every ``gevent.plugins.monkey.*`` entry point of every installed distribution, so
it reads the metadata of the whole environment several times. The gateway has no such plugin.
Measured on the 2-core development machine (under the load of other work): ``import gevent`` and
``patch_all()`` take about 0.2 s with the look-up skipped and about 0.45 s with it, and the time
from starting ``sdm630_httpd`` to the first value in ``/last`` is about 0.1 to 0.25 s shorter.

There is no public switch for the look-up, so for the duration of ``patch_all()`` the module
function is replaced by ``gevent.events.notify`` (which tells subscribers, as before, minus the
entry points) and put back afterwards.
"""

from __future__ import annotations

from gevent import events, monkey


def patch_all_without_plugins() -> None:
    """``monkey.patch_all()``, telling subscribers of gevent's events but loading no entry points."""
    original = events.notify_and_call_entry_points
    events.notify_and_call_entry_points = events.notify
    try:
        monkey.patch_all()
    finally:
        events.notify_and_call_entry_points = original
