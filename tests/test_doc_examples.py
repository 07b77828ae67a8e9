"""The examples people copy from the docs: every TOML file shown loads, every command line parses."""

import re
import shlex
from pathlib import Path

import pytest

from sdm import config
from sdm.cli.httpd import parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOML_BLOCK = re.compile(r"```toml\n(.*?)```", re.S)
COMMAND = re.compile(r"(?:^    |`)(sdm630_httpd [^`\n]*)", re.M)


def examples(pattern):
    return [(path.name, found) for path in DOCS for found in pattern.findall(path.read_text(encoding="utf-8"))]


FILES = [(name, text) for name, text in examples(TOML_BLOCK) if "[[bus]]" in text]
COMMANDS = [(name, line) for name, line in examples(COMMAND)
            if "..." not in line and "$" not in line and "--help" not in line]


def test_the_docs_show_examples():
    assert FILES and COMMANDS


@pytest.mark.parametrize("name,text", FILES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(FILES)])
def test_every_configuration_file_shown_loads(name, text, tmp_path, monkeypatch):
    monkeypatch.setenv("SDM_MQTT_PASSWORD", "")
    path = tmp_path / "shown.toml"
    path.write_text(text)
    loaded = config.load(str(path))
    assert loaded.buses and all(bus.meters for bus in loaded.buses)


@pytest.mark.parametrize("name,line", COMMANDS, ids=[f"{name}-{i}" for i, (name, _) in enumerate(COMMANDS)])
def test_every_command_line_shown_parses(name, line):
    args = parser().parse_args(shlex.split(line.split("#")[0])[1:])
    if not args.config:
        assert config.from_args(args).buses
