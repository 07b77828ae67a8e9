"""SIGHUP: the configuration file read again and applied while the gateway runs.

Buses and meters are compared by name. A bus that is gone stops (its thread
ends and closes its port) and its meters leave the hub; a new bus starts; a
bus whose settings or meters changed is restarted with the new ones, and its
meters that stayed the same keep their readings. Every other bus polls on
untouched and no client is disconnected. The [http], [mqtt] and [metrics]
sections (listen address, limits, broker) are not applied: a changed one is
logged with "restart to apply". A file that does not load changes nothing.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional

from .bus import BusThreads, bus_state_of
from .config import BusConfig, Config, load
from .hub import Hub

log = logging.getLogger(__name__)

OUTPUT_SECTIONS = ("http", "mqtt", "metrics", "name_format", "verbose")


def plan(old: Config, new: Config) -> Dict[str, List[str]]:
    """Bus names to stop (gone or changed) and to start (new or changed), in file order."""
    before = {bus.name: bus for bus in old.buses}
    after = {bus.name: bus for bus in new.buses}
    changed = [name for name in after if name in before and after[name] != before[name]]
    return {"stop": [name for name in before if name not in after] + changed,
            "start": [name for name in after if name not in before or name in changed]}


def apply(old: Config, new: Config, hub: Hub, buses: BusThreads) -> List[str]:
    """Make the running buses and hub those of ``new``; one text per change made or left undone."""
    steps = plan(old, new)
    before = {bus.name: bus for bus in old.buses}
    after = {bus.name: bus for bus in new.buses}
    kept = {m.name: m for m in new.meters}
    done = []
    for name in steps["stop"]:
        buses.stop_bus(name)
        for meter in before[name].meters:
            if kept.get(meter.name) != meter:       # gone, moved or changed: its readings go
                hub.remove_meter(meter.name)
        if name not in after:
            hub.buses.pop(name, None)
            done.append(f"bus {name} removed")
    for name in steps["start"]:
        bus: BusConfig = after[name]
        state = hub.buses.get(name)
        hub.buses[name] = bus_state_of(bus) if state is None or state.port != bus.port else state
        for meter in bus.meters:
            if meter.name not in hub.meters:
                hub.add_meter(meter)
        buses.start_bus(bus)
        done.append(f"bus {name} {'changed' if name in before else 'added'} "
                    f"({len(bus.meters)} meters: {', '.join(m.name for m in bus.meters)})")
    for section in OUTPUT_SECTIONS:
        if getattr(old, section) != getattr(new, section):
            done.append(f"{section} changed: restart to apply")
    return done


def reload(config: Config, hub: Hub, buses: BusThreads) -> Optional[Config]:
    """Read ``config``'s file again and apply it; the new Config, or None when nothing was applied.
    Logged either way (a gateway started with flags has no file to read)."""
    if config.source == "flags":
        log.info("SIGHUP: started with flags, no configuration file to reload; nothing changed")
        return None
    try:
        new = load(config.source)
    except (ValueError, OSError) as err:
        log.error("SIGHUP: %s; the running configuration stays", err)
        return None
    done = apply(config, new, hub, buses)
    log.info("SIGHUP: reloaded %s: %s", config.source, "; ".join(done) if done else "no change")
    return new
