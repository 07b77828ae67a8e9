"""sdm630_httpd: poll the meters on one RS485 bus and serve their readings over HTTP."""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

import gevent  # noqa: E402

from .. import __version__  # noqa: E402
from ..api import make_app  # noqa: E402
from ..hub import Hub, MeterConfig  # noqa: E402
from ..meters.registry import lookup, parse_device_list  # noqa: E402
from ..mqtt import add_mqtt_flags, start_mqtt  # noqa: E402
from ..poller import Poller, PollSettings  # noqa: E402
from ..server import make_server  # noqa: E402
from ..streams import Streams  # noqa: E402
from ..streams.ws import WsSettings  # noqa: E402
from ..transport import SerialTransport, comset  # noqa: E402
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
    p.add_argument("--max-ws-clients", type=int, default=200,
                   help="websocket clients at a time; more are refused with close code 1013 "
                        "(default: %(default)s)")
    p.add_argument("--max-long-polls", type=int, default=200,
                   help="/firehose requests waiting at a time; more get a 503 (default: %(default)s)")
    add_mqtt_flags(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_pauses(items: List[str]) -> Dict[str, float]:
    pauses = {}
    for item in items:
        keyword, sep, ms = item.partition("=")
        if not sep:
            raise ValueError(f"--pause {item!r} is not TYPE=MS")
        try:
            pauses[lookup(keyword).key] = float(ms) / 1000.0
        except ValueError as err:
            raise ValueError(f"--pause {item!r}: {err}") from None
    return pauses


def build(args: argparse.Namespace):
    """Hub, poller and HTTP server from parsed arguments (ValueError for bad ones)."""
    devices = parse_device_list(args.device_list)
    if "%d" not in args.unique_id_format:
        raise ValueError("--unique_id_format must contain %d")
    configs = [MeterConfig(slave, type_name, model, args.unique_id_format % slave)
               for type_name, model, slave in devices]
    hub = Hub(configs)
    settings = PollSettings(timeout=args.timeout, retries=args.retries, max_failures=args.max_failures,
                            reprobe_max=args.reprobe_max, pauses=parse_pauses(args.pause))
    poller = Poller(hub, SerialTransport(args.serialadapter, comset(args.comset)), settings)
    if args.max_ws_clients < 0 or args.max_long_polls < 0:
        raise ValueError("--max-ws-clients and --max-long-polls must not be negative")
    streams = Streams(hub, WsSettings(max_clients=args.max_ws_clients), max_long_polls=args.max_long_polls)
    server = make_server(streams.mount(make_app(hub)), args.url, access_log=args.verbose)
    return hub, poller, streams, server


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        hub, poller, streams, server = build(args)
        mqtt = start_mqtt(hub, args)
    except (ValueError, OSError) as err:
        print(f"sdm630_httpd: {err}", file=sys.stderr)
        return 2
    for model in {m.config.model.key: m.config.model for m in hub.meters.values()}.values():
        log.info("%s %s: %d values", model.manufacturer, model.model, len(model.registers))
    poll = gevent.spawn(poller.run)

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
