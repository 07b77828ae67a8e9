"""What `pip install .` lays out: the page as data of sdm, the simulator as sdm_simulator, one version.

The layout comes from setuptools' build_py (the step a wheel is made from), run offline; the
wheel, a plain and an editable install need the package index for setuptools, so they were
checked by hand (docs/running.md), not here.
"""

import subprocess
import sys
import sysconfig
from pathlib import Path

import sdm

ROOT = Path(__file__).resolve().parent.parent


def run_setup(*args: str) -> str:
    done = subprocess.run([sys.executable, "setup.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_version_is_read_from_the_package():
    assert run_setup("--version").strip() == sdm.__version__


def test_page_and_simulator_are_installed_under_names_that_cannot_clash(tmp_path):
    lib = tmp_path / "lib"
    run_setup("-q", "build_py", "--build-lib", str(lib))
    assert {p.name for p in (lib / "sdm" / "web").iterdir()} >= {"index.html", "app.js", "style.css"}
    assert (lib / "sdm_simulator" / "cli.py").is_file() and (lib / "sdm_simulator" / "__main__.py").is_file()
    assert sorted(p.name for p in lib.iterdir()) == ["sdm", "sdm_simulator"]   # no top-level web, simulator
    probe = ("import importlib.util, sdm.api, sdm_simulator.cli, sdm_simulator.demo\n"
             "print(sdm.api.WEB_ROOT)\n"
             "print(importlib.util.find_spec('web'), importlib.util.find_spec('simulator'))")
    # -S: the dependencies from site-packages, but none of its .pth files (an editable checkout's finder)
    path = f"{lib}:{sysconfig.get_paths()['purelib']}"
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env={"PYTHONPATH": path},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    web_root, specs = done.stdout.splitlines()
    assert Path(web_root) == lib / "sdm" / "web"
    assert specs == "None None"


def test_a_checkout_serves_the_top_level_web_folder():
    from sdm.api import WEB_ROOT
    assert Path(WEB_ROOT) == ROOT / "web"
