"""contrib/sdm630_httpd.service: what docs/running.md promises of it."""

import configparser
import shlex

from sdm.cli.httpd import parser
from sdm.config import HttpConfig
from sdm.server import FD_RESERVE
from tests.support import ROOT

UNIT = ROOT / "contrib" / "sdm630_httpd.service"


def unit() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None, strict=False)
    config.optionxform = str
    config.read(UNIT, encoding="utf-8")
    return config


def test_unit_restarts_always_after_the_network_as_a_dialout_user():
    config = unit()
    assert config["Unit"]["After"] == "network-online.target"
    assert "network-online.target" in config["Unit"]["Wants"]
    service = config["Service"]
    assert service["Restart"] == "always"
    assert service["User"] not in ("", "root") and service["Group"] != "root"
    assert "dialout" in service["SupplementaryGroups"].split()
    assert service["KillSignal"] == "SIGTERM"
    assert config["Install"]["WantedBy"] == "multi-user.target"


def test_default_arguments_are_a_valid_command_line():
    service = unit()["Service"]
    (assignment,) = shlex.split(service["Environment"])        # systemd unquotes like a shell
    name, _, value = assignment.partition("=")
    assert name == "SDM_ARGS" and service["ExecStart"].endswith("sdm630_httpd $SDM_ARGS")
    args = parser().parse_args(value.split())                  # $SDM_ARGS: split at white space
    assert args.serialadapter == "/dev/ttyUSB0" and args.device_list == "sdm:1"


def test_the_file_limit_holds_the_connection_cap_and_the_reserve():
    limit = int(unit()["Service"]["LimitNOFILE"])
    needed = HttpConfig().max_connections + FD_RESERVE
    assert needed <= limit <= 4 * needed      # room for the streams' cap inside it, not unbounded


def test_unit_lets_the_rtu_slaves_helper_take_real_time_priority():
    """sdm/serve_process.py asks for SCHED_FIFO priority REALTIME_PRIORITY; an unprivileged
    service user gets it only from this limit."""
    from sdm.serve_process import REALTIME_PRIORITY
    assert int(unit()["Service"]["LimitRTPRIO"]) >= REALTIME_PRIORITY
