"""Packaging of sdm: the gateway (``sdm``), its page (``web/`` installed as ``sdm/web``) and the
simulator (``simulator/`` installed as ``sdm_simulator``, a name no other project uses).

Tool settings live in pyproject.toml; the version lives in sdm/__init__.py only.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """The version from sdm/__init__.py, read as text: importing sdm would need its dependencies."""
    text = (HERE / "sdm" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("sdm/__init__.py has no __version__ line")
    return match.group(1)


def simulator_packages() -> list:
    """simulator and its subpackages under their installed name, sdm_simulator."""
    return ["sdm_simulator" + name[len("simulator"):] for name in find_packages(include=["simulator", "simulator.*"])]


# Upper bounds: the newest major (or minor, for 0.x) release the tests ran with. sdm/compat/ overrides
# private parts of gevent and gevent-websocket, so a new release of those needs tests/sdm/compat first.
INSTALL_REQUIRES = [
    "gevent>=23,<27",
    "gevent-websocket>=0.10.1,<0.11",
    "bottle>=0.12,<0.14",
    "umodbus>=1.0.4,<1.1",
    "pyserial>=3.5,<4",
    "paho-mqtt>=2.0,<3",
    "prometheus-client>=0.17,<0.27",
    'tomli>=1.1,<3; python_version<"3.11"',   # the config file; Python 3.11+ has tomllib
]

setup(
    name="sdm",
    version=read_version(),
    description="HTTP gateway for MODBUS/RTU smart energy meters (Eastron SDM, Janitza B23, DZG)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["sdm", "sdm.*"]) + ["sdm.web"] + simulator_packages(),
    package_dir={"sdm.web": "web", "sdm_simulator": "simulator"},
    package_data={"sdm.web": ["*.html", "*.js", "*.css", "*.svg"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8,<10", "hypothesis>=6,<7", "pymodbus>=3.8,<3.17", "ruff>=0.6,<0.18",
                 "websocket-client>=1.6,<2", "mypy>=1.10,<2", "types-pyserial"],
    },
    entry_points={
        "console_scripts": [
            "sdm630_httpd=sdm.cli.httpd:main",
            "sdm630=sdm.cli.httpd:main",
            "sdm_detect=sdm.cli.detect:main",
            "sdm_doctor=sdm.cli.doctor:main",
            "sdm_config=sdm.cli.config:main",
            "sdm630_logger=sdm.cli.logger:main",
            "sdm630_monitor=sdm.cli.monitor:main",
            "sdm_simulator=sdm_simulator.cli:main",
            "sdm_demo=sdm_simulator.demo:main",
        ],
    },
)
