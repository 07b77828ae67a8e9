"""sdm630_httpd: poll the meters on one RS485 bus and serve their readings over HTTP."""

from gevent import events, monkey

# patch_all() looks up gevent plugins (entry points of every installed package) at each of its
# steps; the gateway has none, and skipping the look-up halves the time to the first value.
events.notify_and_call_entry_points = events.notify
monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional  # noqa: E402

import gevent  # noqa: E402

from .. import __version__  # noqa: E402
from ..config import parse_pauses  # noqa: E402
from ..hub import Hub, MeterConfig  # noqa: E402
from ..meters.registry import parse_device_list  # noqa: E402
from ..mqtt import add_mqtt_flags, start_mqtt  # noqa: E402
from ..poller import Poller, PollSettings  # noqa: E402
from ..schedule import DEFAULT_SLOW_INTERVAL, schedules  # noqa: E402
from ..transport import comset, silence_time  # noqa: E402
from ..transport.serial import SerialTransport  # noqa: E402
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
    p.add_argument("--max-ws-clients", type=int, default=200,
                   help="websocket clients at a time; more are refused with close code 1013 "
                        "(default: %(default)s)")
    p.add_argument("--max-long-polls", type=int, default=200,
                   help="/firehose requests waiting at a time; more get a 503 (default: %(default)s)")
    add_mqtt_flags(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def build(args: argparse.Namespace):
    """Hub and poller from parsed arguments (ValueError for bad ones)."""
    devices = parse_device_list(args.device_list)
    if "%d" not in args.unique_id_format:
        raise ValueError("--unique_id_format must contain %d")
    configs = [MeterConfig(slave, type_name, model, args.unique_id_format % slave)
               for type_name, model, slave in devices]
    hub = Hub(configs)
    settings = PollSettings(timeout=args.timeout, retries=args.retries, max_failures=args.max_failures,
                            reprobe_max=args.reprobe_max, pauses=parse_pauses(args.pause),
                            schedules=schedules([c.device_id for c in configs], args.interval, args.slow))
    poller = Poller(hub, SerialTransport(args.serialadapter, comset(args.comset)), settings)
    if args.max_ws_clients < 0 or args.max_long_polls < 0:
        raise ValueError("--max-ws-clients and --max-long-polls must not be negative")
    return hub, poller


def build_http(args: argparse.Namespace, hub: Hub):
    """The streams and the HTTP server on the hub (ValueError or OSError for a bad or busy --url).

    Their modules are imported here rather than at the top: main() calls this
    once the poller has sent its first request, so that bottle, prometheus_client
    and the rest load while that request is on the wire (the first value is
    there sooner after a start).
    """
    from ..api import fast_last, make_app
    from ..server import make_server
    from ..streams import Streams
    from ..streams.ws import WsSettings
    streams = Streams(hub, WsSettings(max_clients=args.max_ws_clients), max_long_polls=args.max_long_polls)
    return streams, make_server(fast_last(hub, streams.mount(make_app(hub))), args.url, access_log=args.verbose)


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        hub, poller = build(args)
        mqtt = start_mqtt(hub, args)
    except (ValueError, OSError) as err:
        print(f"sdm630_httpd: {err}", file=sys.stderr)
        return 2
    for model in {m.config.model.key: m.config.model for m in hub.meters.values()}.values():
        log.info("%s %s: %d values", model.manufacturer, model.model, len(model.registers))
    poll = gevent.spawn(poller.run)
    gevent.sleep(silence_time(poller.transport.char_time) + 0.002)   # its first request goes out meanwhile
    try:
        streams, server = build_http(args, hub)
    except (ValueError, OSError) as err:
        poll.kill()
        if mqtt:
            mqtt.stop(timeout=0.5)
        print(f"sdm630_httpd: {err}", file=sys.stderr)
        return 2

    def shutdown():
        """Stop polling (the kill ends a read or a back-off sleep and closes the port), end the
        streams cleanly, then HTTP."""
        if server.closed:
            return
        log.info("stopping")
        poller.stop()
        poll.kill(block=False)
        if mqtt:
            mqtt.stop(timeout=0.5)
        streams.stop()
        server.stop(timeout=STOP_GRACE)

    gevent.signal_handler(signal.SIGTERM, shutdown)
    gevent.signal_handler(signal.SIGINT, shutdown)
    server.start()
    host, port = server.address[:2]
    log.info("serving on http://%s:%d/ for %s", host or "0.0.0.0", port,
             ", ".join(f"{m.config.type_name.lower()}:{m.device_id}" for m in hub.meters.values()))
    server.serve_forever()
    poll.join(timeout=1)
    poll.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
