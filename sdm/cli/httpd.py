"""sdm630_httpd: poll the meters on one or more buses and serve their readings over HTTP."""

from ..compat.gevent_monkey import patch_all_without_plugins

patch_all_without_plugins()   # first of all; without gevent's plugin look-up (a faster start)

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional, Tuple  # noqa: E402

import gevent  # noqa: E402

from .. import __version__  # noqa: E402
from .. import config as configuration  # noqa: E402
from ..bus import BusThreads, bus_state_of  # noqa: E402
from ..cache import RegisterCache  # noqa: E402
from ..config import CountersConfig  # noqa: E402
from ..counter_store import CounterKeeper  # noqa: E402
from ..hub import Hub  # noqa: E402
from ..mqtt import MqttPublisher, add_mqtt_flags, start_mqtt  # noqa: E402
from ..sanity import Sanity  # noqa: E402
from ..schedule import DEFAULT_SLOW_INTERVAL  # noqa: E402
from ..serve import Serving, start_serving  # noqa: E402
from ..state import StateError, state_dir  # noqa: E402
from ..timing import TimingFile  # noqa: E402
from .common import add_serial_flags, setup_logging  # noqa: E402

log = logging.getLogger("sdm630_httpd")

STOP_GRACE = 0.5   # seconds open HTTP connections get to finish on SIGTERM/SIGINT (exit within 2 s)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdm630_httpd", description=__doc__)
    add_serial_flags(p)
    p.add_argument("-u", "--url", default=":8080", help="HTTP listen address (default: %(default)s)")
    p.add_argument("-d", "--device_list", default="sdm:1",
                   help="meters as TYPE:ID[,TYPE:ID...]; types sdm120, sdm220, sdm230, sdm530, "
                        "sdm630, sdm (= sdm630), janitza, dzg (default: %(default)s)")
    p.add_argument("-f", "--unique_id_format", default="Instrument%d",
                   help="UniqueId of a meter, %%d = its id (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every exchange and reading")
    p.add_argument("--timeout", type=float, default=0.3,
                   help="seconds a meter may take to start answering (default: %(default)s)")
    p.add_argument("--retries", type=int, default=2,
                   help="extra attempts of a failed request per cycle (default: %(default)s)")
    p.add_argument("--max-failures", type=int, default=5,
                   help="failed exchanges in a row before a meter is unavailable (default: %(default)s)")
    p.add_argument("--reprobe-max", type=float, default=60.0,
                   help="longest wait between re-probes of an unavailable meter, s (default: %(default)s)")
    p.add_argument("--pause", action="append", default=[], metavar="TYPE=MS",
                   help="quiet time a meter type needs before its next request, e.g. sdm630=20; "
                        "repeatable (defaults: Eastron 60 ms, Janitza and DZG 20 ms)")
    p.add_argument("--interval", action="append", default=[], metavar="[ID=]SECONDS",
                   help="least time between the starts of two readings of meter ID (of every meter "
                        "without ID=); repeatable (default: 0, as fast as the bus allows)")
    p.add_argument("--slow", action="append", default=[], nargs="?", const=str(DEFAULT_SLOW_INTERVAL),
                   metavar="[ID=]SECONDS",
                   help="read energy counters, THD and frequency only every SECONDS (default "
                        f"{DEFAULT_SLOW_INTERVAL:g}), power, voltage, current and power factor every cycle; "
                        "for meter ID or every meter; repeatable (default: everything every cycle)")
    p.add_argument("--max-current", action="append", default=[], metavar="[ID=]AMPERES",
                   help="rated current per phase of meter ID (of every meter without ID=), for one "
                        "behind current transformers: bounds and counter rises follow it; repeatable "
                        "(default: the model's)")
    p.add_argument("--state-dir", default=None, metavar="DIR",
                   help="where learned meter timing and the last accepted energy counters are kept "
                        "across restarts (default: "
                        "$STATE_DIRECTORY, else $XDG_STATE_HOME/sdm, else ~/.local/state/sdm)")
    p.add_argument("--counter-confirm", type=int, default=CountersConfig.confirm_readings, metavar="N",
                   help="consistent readings before a lower (reset) or much higher energy counter is "
                        "believed (default: %(default)s)")
    p.add_argument("--counter-confirm-seconds", type=float, default=CountersConfig.confirm_seconds,
                   metavar="T", help="... spanning at least this many seconds (default: %(default)s)")
    p.add_argument("--max-ws-clients", type=int, default=200,
                   help="websocket clients at a time; more are refused with close code 1013 "
                        "(default: %(default)s)")
    p.add_argument("--max-long-polls", type=int, default=200,
                   help="/firehose requests waiting at a time; more get a 503 (default: %(default)s)")
    p.add_argument("--ws-per-address", type=int, default=10,
                   help="websocket clients from one address at a time (default: %(default)s)")
    p.add_argument("--long-polls-per-address", type=int, default=10,
                   help="/firehose requests from one address waiting at a time (default: %(default)s)")
    add_mqtt_flags(p)
    p.add_argument("--config", metavar="FILE",
                   help="read buses, meters and outputs from this TOML file (docs/config.md) instead "
                        "of the flags above")
    p.add_argument("--print-config", action="store_true",
                   help="print the configuration file equivalent to the given flags, and exit")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def configure(args: argparse.Namespace) -> configuration.Config:
    """The configuration from the file of --config, or from the flags (ValueError if bad)."""
    if args.config:
        return configuration.load(args.config)
    return configuration.from_args(args)


def build_http(config: configuration.Config, hub: Hub):
    """The streams and the HTTP server on the hub (ValueError or OSError for a bad or busy address).

    Their modules are imported here rather than at the top: main() calls this
    once the buses have started, so that bottle, prometheus_client and the rest
    load while the first requests are on the wire.
    """
    from ..api import fast_last, guard, make_app
    from ..server import make_server
    from ..streams import Streams
    from ..streams.ws import WsSettings
    http = config.http
    if http.max_ws_clients < 0 or http.max_long_polls < 0:
        raise ValueError("--max-ws-clients and --max-long-polls must not be negative")
    streams = Streams(hub, WsSettings(max_clients=http.max_ws_clients, per_address=http.ws_per_address),
                      max_long_polls=http.max_long_polls, long_polls_per_address=http.long_polls_per_address)
    app = make_app(hub, bus_label=config.metrics.bus_label)
    return streams, make_server(guard(fast_last(hub, streams.mount(app)), http.cors), http.listen,
                                access_log=config.verbose, limits=http)


def timing_file(config: configuration.Config) -> Optional[TimingFile]:
    """The learned-timing file in the state directory; without a usable directory the gateway
    still runs, learning afresh on every start (logged)."""
    try:
        return TimingFile(state_dir(config.state_dir))
    except StateError as err:
        log.warning("%s; learned timing will not survive a restart", err)
        return None


def start(config: configuration.Config, sanity: Sanity
          ) -> Tuple[Hub, BusThreads, Optional[MqttPublisher], Optional[Serving]]:
    """Hub, bus threads (started), MQTT and the Modbus servers (ValueError or OSError for bad settings)."""
    hub = Hub(config.meters, [bus_state_of(bus) for bus in config.buses], sanity)
    cache = RegisterCache() if config.serve else None
    buses = BusThreads(hub, config.buses, timing_file(config), cache)
    serving = start_serving(config, cache, buses.forward) if cache is not None else None
    hub.serving = list(serving.stats) if serving else []
    mqtt = start_mqtt(hub, config.mqtt)
    for model in {m.model.key: m.model for m in config.meters}.values():
        log.info("%s %s: %d values", model.manufacturer, model.model, len(model.registers))
    buses.start()
    return hub, buses, mqtt, serving


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        config = configure(args)
    except (ValueError, OSError) as err:
        print(f"sdm630_httpd: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(configuration.to_toml(config), end="")
        return 0
    if config.verbose and not args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    try:
        counters = CounterKeeper(config)
        hub, buses, mqtt, serving = start(config, Sanity(counters.guard))
    except (ValueError, OSError, StateError) as err:
        print(f"sdm630_httpd: {err}", file=sys.stderr)
        return 2
    try:
        streams, server = build_http(config, hub)
    except (ValueError, OSError) as err:
        buses.stop()
        if serving:
            serving.stop()
        if mqtt:
            mqtt.stop(timeout=0.5)
        print(f"sdm630_httpd: {err}", file=sys.stderr)
        return 2

    def shutdown():
        """Stop polling (each bus thread ends its exchange and closes its port), end the
        streams cleanly, then HTTP."""
        if server.closed:
            return
        log.info("stopping")
        buses.stop()
        counters.stop()
        if serving:
            serving.stop()
        if mqtt:
            mqtt.stop(timeout=0.5)
        streams.stop()
        server.stop(timeout=STOP_GRACE)

    counters.start()
    running = [config]

    def reload_file():
        """SIGHUP: the configuration file again, applied to the running buses (sdm.reload)."""
        from ..reload import reload
        new = reload(running[0], hub, buses)
        if new is not None:
            running[0] = new

    gevent.signal_handler(signal.SIGTERM, shutdown)
    gevent.signal_handler(signal.SIGINT, shutdown)
    gevent.signal_handler(signal.SIGHUP, reload_file)
    server.start()
    host, port = server.address[:2]
    log.info("serving on http://%s:%d/ for %s", host or "0.0.0.0", port,
             ", ".join(f"{m.bus}/{m.name} ({m.type_name.lower()}:{m.device_id})" for m in config.meters))
    server.serve_forever()
    buses.stop()
    counters.stop()
    if serving:
        serving.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
