"""Prometheus ``/metrics``: a collector that reads the hub, never the bus.

A scrape costs no MODBUS request: it reports what the poller last read.
Values are in base units (volts, amperes, watts, joules, hertz, ratios);
per-phase values carry a ``phase`` label (L1, L2, L3), totals have their own
names.  Readings of a meter that is unavailable are left out (stale numbers
would draw flat lines in Grafana); ``sdm_meter_up`` says which meters answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Dict, Iterator, List, Optional, Union

import bottle
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .answers import OncePerChange
from .framing.rtu import ERROR_KINDS
from .hub import AVAILABLE, Hub, MeterState
from .measurements import PHASES

KWH_JOULES = 3.6e6
PERCENT = 0.01
LABELS = ["meter", "model"]
BUS_LABEL = "bus"


@dataclass(frozen=True)
class Exported:
    """One metric family from catalogue names: ``source`` is a name, or a prefix for per-phase values."""

    source: str
    metric: str           # for counters without the _total suffix the client adds
    help: str
    scale: float = 1.0
    counter: bool = False


PER_PHASE = [
    Exported("VolLoc", "sdm_phase_voltage_volts", "Line-to-neutral voltage of a phase."),
    Exported("AmpLoc", "sdm_phase_current_amperes", "Current of a phase."),
    Exported("WLoc", "sdm_phase_power_watts", "Active power of a phase; negative while feeding in."),
    Exported("VALoc", "sdm_phase_apparent_power_voltamperes", "Apparent power of a phase."),
    Exported("VArLoc", "sdm_phase_reactive_power_voltamperes_reactive", "Reactive power of a phase."),
    Exported("AngLoc", "sdm_phase_power_factor", "Power factor of a phase (-1 to 1)."),
    Exported("ThdVol", "sdm_phase_voltage_thd_ratio", "Total harmonic distortion of a phase's voltage.",
             PERCENT),
    Exported("TotkWhImport", "sdm_phase_import_energy_joules", "Energy imported on a phase.",
             KWH_JOULES, counter=True),
    Exported("TotkWhExport", "sdm_phase_export_energy_joules", "Energy exported on a phase.",
             KWH_JOULES, counter=True),
]

TOTALS = [
    Exported("TotW", "sdm_power_watts", "Active power of all phases; negative while feeding in."),
    Exported("TotWImport", "sdm_import_power_watts", "Active power drawn, all phases."),
    Exported("TotWExport", "sdm_export_power_watts", "Active power fed in, all phases."),
    Exported("TotVA", "sdm_apparent_power_voltamperes", "Apparent power of all phases."),
    Exported("TotVAr", "sdm_reactive_power_voltamperes_reactive", "Reactive power of all phases."),
    Exported("TotPF", "sdm_power_factor", "Power factor of all phases (-1 to 1)."),
    Exported("Freq", "sdm_frequency_hertz", "Frequency of the supply voltage."),
    Exported("ThdVol", "sdm_voltage_thd_average_ratio", "Average total harmonic distortion of the voltages.",
             PERCENT),
    Exported("TotkWhImport", "sdm_import_energy_joules", "Energy imported, all phases.", KWH_JOULES, counter=True),
    Exported("TotkWhExport", "sdm_export_energy_joules", "Energy exported, all phases.", KWH_JOULES, counter=True),
]


def reporting(meter: MeterState) -> bool:
    return meter.status == AVAILABLE and bool(meter.last_good)


def scaled(meter: MeterState, name: str, scale: float) -> Optional[float]:
    value = meter.values.get(name)
    return None if value is None else value * scale


class HubCollector:
    """prometheus_client collector over the hub's last values and counters.

    With ``bus_label`` every meter series also carries its bus's name (a gateway
    started with flags leaves it out, so its series stay as they always were).
    """

    def __init__(self, hub: Hub, bus_label: bool = False):
        self.hub = hub
        self.names = LABELS + [BUS_LABEL] if bus_label else LABELS

    def family(self, spec: Exported, extra_labels: List[str]) -> Union[CounterMetricFamily, GaugeMetricFamily]:
        kind = CounterMetricFamily if spec.counter else GaugeMetricFamily
        return kind(spec.metric, spec.help, labels=self.names + extra_labels)

    def labels(self, meter: MeterState) -> List[str]:
        values = [meter.name, meter.config.model.model]
        return values + [meter.config.bus] if len(self.names) > len(LABELS) else values

    def collect(self) -> Iterator[Metric]:
        meters = [m for m in self.hub.meters.values() if reporting(m)]
        for spec in PER_PHASE:
            metric = self.family(spec, ["phase"])
            for meter in meters:
                for number, letter in enumerate(PHASES, start=1):
                    value = scaled(meter, f"{spec.source}Phs{letter}", spec.scale)
                    if value is not None:
                        metric.add_metric(self.labels(meter) + [f"L{number}"], value)
            yield metric
        for spec in TOTALS:
            metric = self.family(spec, [])
            for meter in meters:
                value = scaled(meter, spec.source, spec.scale)
                if value is not None:
                    metric.add_metric(self.labels(meter), value)
            yield metric
        yield from self._meter_health()
        yield from self._bus()
        yield from self._serve()

    def _meter_health(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sdm_meter_up", "1 while the meter answers, 0 while it is unavailable.",
                               labels=self.names)
        readings = CounterMetricFamily("sdm_meter_readings", "Complete readings of all of a meter's values.",
                                       labels=self.names)
        last = GaugeMetricFamily("sdm_meter_last_reading_timestamp_seconds",
                                 "Unix time of the meter's last good answer.", labels=self.names)
        requests = CounterMetricFamily("sdm_modbus_requests", "MODBUS requests sent to a meter.", labels=self.names)
        errors = CounterMetricFamily("sdm_modbus_errors", "Failed MODBUS requests to a meter, by kind of failure.",
                                     labels=self.names + ["kind"])
        for meter in self.hub.meters.values():
            up.add_metric(self.labels(meter), 1.0 if reporting(meter) else 0.0)
            readings.add_metric(self.labels(meter), meter.complete_readings)
            if meter.last_good:
                last.add_metric(self.labels(meter), meter.last_good)
            requests.add_metric(self.labels(meter), meter.requests)
            for kind in ERROR_KINDS:
                errors.add_metric(self.labels(meter) + [kind], meter.errors.get(kind, 0))
        yield from (up, readings, last, requests, errors)

    def _bus(self) -> Iterator[Metric]:
        bus_labels = [BUS_LABEL] if len(self.names) > len(LABELS) else []
        connected = GaugeMetricFamily("sdm_bus_connected", "1 while the bus's adapter or gateway connection "
                                      "is open.", labels=bus_labels)
        reopens = CounterMetricFamily("sdm_bus_reopens", "Times the bus's adapter or connection was opened "
                                      "again after a failure.", labels=bus_labels)
        for bus in self.hub.buses.values():
            label = [bus.name] if bus_labels else []
            connected.add_metric(label, 1.0 if bus.connected else 0.0)
            reopens.add_metric(label, float(bus.reconnects))
        yield connected
        yield reopens

    def _serve(self) -> Iterator[Metric]:
        """The Modbus servers of sdm/serve.py: requests, refusals by reason, the served values' age."""
        if not self.hub.serving:
            return
        requests = CounterMetricFamily("sdm_serve_requests", "MODBUS requests to a served unit.", labels=["server"])
        refused = CounterMetricFamily("sdm_serve_refusals", "Requests answered with an exception (or, on RTU, "
                                      "not at all), by reason.", labels=["server", "reason"])
        age = GaugeMetricFamily("sdm_serve_value_age_seconds", "Age of the registers served: mean and most.",
                                labels=["server", "stat"])
        clients = GaugeMetricFamily("sdm_serve_connections", "Modbus TCP clients connected.", labels=["server"])
        for stats in self.hub.serving:
            snapshot = stats.snapshot()
            where = snapshot["Where"]
            requests.add_metric([where], snapshot["Requests"])
            for reason, count in snapshot["RefusedByReason"].items():
                refused.add_metric([where, reason], count)
            if snapshot["MeanAgeSeconds"] is not None:
                age.add_metric([where, "mean"], snapshot["MeanAgeSeconds"])
                age.add_metric([where, "max"], snapshot["MaxAgeSeconds"])
            clients.add_metric([where], snapshot["Connections"])
        yield from (requests, refused, age, clients)


def registry_for(hub: Hub, bus_label: bool = False) -> CollectorRegistry:
    """The hub's metrics plus the process's own (CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub, bus_label))
    ProcessCollector(registry=registry)
    return registry


def add_metrics_route(app: bottle.Bottle, hub: Hub, bus_label: bool = False) -> None:
    """``GET /metrics`` in the Prometheus text format (OpenMetrics when the scraper asks for it),
    encoded once per change of the hub for each of the two formats (sdm.answers)."""
    registry = registry_for(hub, bus_label)
    encoded: Dict[str, OncePerChange[bytes]] = {}

    @app.get("/metrics")
    def metrics() -> bytes:
        encoder, content_type = choose_encoder(bottle.request.get_header("Accept", ""))
        bottle.response.content_type = content_type
        if content_type not in encoded:
            encoded[content_type] = OncePerChange(partial(encoder, registry), hub)
        return encoded[content_type].get()
