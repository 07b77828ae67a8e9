"""The /status object: gosdm630's shape (seed README) plus per-meter counters."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any, Dict, Iterable

from .framing.rtu import ERROR_KINDS
from .hub import BusState, Hub, MeterState
from .readings import rfc3339


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _per_minute(count: int, uptime: float) -> float:
    return count / (uptime / 60.0) if uptime > 0 else 0.0


def _kinds(errors: Counter) -> Dict[str, int]:
    return {kind: errors.get(kind, 0) for kind in ERROR_KINDS}


def _errors(meters: Iterable[MeterState]) -> Counter:
    errors: Counter = Counter()
    for meter in meters:
        errors.update(meter.errors)
    return errors


def _bus(hub: Hub, bus: BusState) -> Dict[str, Any]:
    meters = hub.on_bus(bus.name)
    errors = _errors(meters)
    return {
        "Name": bus.name,
        "Port": bus.port,
        "Transport": bus.transport,
        "Line": bus.line,
        "Connected": bus.connected,
        "Reconnects": bus.reconnects,
        "Requests": sum(m.requests for m in meters),
        "Errors": sum(errors.values()),
        "ErrorsByKind": _kinds(errors),
        "Problem": bus.hint,
        "Mode": bus.mode,
        **({"Listen": dict(bus.listen)} if bus.listen is not None else {}),
    }


def _legacy_bus(hub: Hub) -> Dict[str, Any]:
    """The one-bus ``Bus`` object of earlier versions, kept for existing clients: every port,
    connected only while every bus is, reconnects summed."""
    buses = list(hub.buses.values())
    return {
        "Device": ", ".join(bus.port for bus in buses),
        "Connected": all(bus.connected for bus in buses),
        "Reconnects": sum(bus.reconnects for bus in buses),
    }


def status(hub: Hub) -> Dict[str, Any]:
    uptime = time.time() - hub.started
    requests = sum(m.requests for m in hub.meters.values())
    errors = _errors(hub.meters.values())
    rss = _rss_bytes()
    return {
        "Starttime": rfc3339(hub.started),
        "UptimeSeconds": uptime,
        "Memory": {"Alloc": rss, "HeapAlloc": rss},
        "Modbus": {
            "TotalModbusRequests": requests,
            "ModbusRequestRatePerMinute": _per_minute(requests, uptime),
            "TotalModbusErrors": sum(errors.values()),
            "ModbusErrorRatePerMinute": _per_minute(sum(errors.values()), uptime),
            "ErrorsByKind": _kinds(errors),
        },
        "Bus": _legacy_bus(hub),
        "Buses": [_bus(hub, bus) for bus in hub.buses.values()],
        **({"Serve": [stats.snapshot() for stats in hub.serving]} if hub.serving else {}),
        **hub.sections(),
        "ConfiguredMeters": [
            {
                "Id": meter.device_id,
                "Name": meter.name,
                "Bus": meter.config.bus,
                "Type": meter.config.type_name,
                "Model": f"{meter.config.model.manufacturer} {meter.config.model.model}",
                "UniqueId": meter.name,
                "Status": meter.status,
                "LastReading": int(meter.last_good),
                "CompleteReadings": meter.complete_readings,
                "Requests": meter.requests,
                "Errors": sum(meter.errors.values()),
                "ErrorsByKind": _kinds(meter.errors),
                "Checks": hub.checks(meter),
                "Timing": meter.timing or None,
            }
            for meter in hub.meters.values()
        ],
    }
