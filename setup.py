from setuptools import find_packages, setup

setup(
    name="sdm",
    version="0.1.0",
    description="HTTP gateway for MODBUS/RTU smart energy meters (Eastron SDM, Janitza B23, DZG)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["sdm", "sdm.*", "simulator", "simulator.*", "web"]),
    package_data={"web": ["*.html", "*.js", "*.css", "*.svg"]},
    install_requires=[
        "gevent>=23",
        "bottle>=0.12",
        "gevent-websocket>=0.10",
        "umodbus>=1.0.4",
        "pyserial>=3.5",
        "paho-mqtt>=2.0,<3",
        "prometheus-client>=0.17",
        'tomli>=1.1; python_version<"3.11"',   # the config file; Python 3.11+ has tomllib
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "pymodbus>=3.8", "ruff", "websocket-client>=1.6"],
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
            "sdm_simulator=simulator.cli:main",
            "sdm_demo=simulator.demo:main",
        ],
    },
)
