"""The type check's settings (pyproject.toml [tool.mypy]): strict on the core rooms, default elsewhere.

`make test` runs mypy over the tree; these tests pin down what its settings mean, because mypy
takes `strict = true` inside an override as strict mode for every module (mypy issue #11401),
which is easy to reintroduce and silently changes what "core" means.
"""

import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:   # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CORE = ["sdm.transport.*", "sdm.framing.*", "sdm.encoding", "sdm.meters.*", "sdm.plan", "sdm.poller", "sdm.hub"]
UNTYPED = "def scale(value, factor):\n    return value * factor\n"


def mypy_settings() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]


def test_the_strict_override_names_exactly_the_core_and_spells_out_its_flags():
    overrides = mypy_settings()["overrides"]
    assert [o["module"] for o in overrides] == [CORE]
    strict = overrides[0]
    assert "strict" not in strict
    assert all(strict[flag] is True for flag in ("disallow_untyped_defs", "disallow_any_generics",
                                                 "warn_return_any", "disallow_untyped_calls"))
    assert strict["implicit_reexport"] is False


def run_mypy(tree: Path, *files: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tree / ".mypy_cache"), *files],
        cwd=tree, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module, strict", [("sdm/plan.py", True), ("sdm/framing/rtu.py", True),
                                            ("sdm/mqtt.py", False), ("simulator/tcp.py", False)])
def test_an_unannotated_function_is_an_error_on_the_core_only(tmp_path, module, strict):
    """The same untyped function in a stand-in module of that name, checked with the real settings."""
    for package in ("sdm", "sdm/framing", "simulator"):
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / module).write_text(UNTYPED)
    done = run_mypy(tmp_path, module)
    assert ("no-untyped-def" in done.stdout) == strict, done.stdout
    assert done.returncode == (1 if strict else 0), done.stdout + done.stderr


def test_untyped_bodies_are_checked_outside_the_core_too(tmp_path):
    (tmp_path / "sdm").mkdir()
    (tmp_path / "sdm" / "__init__.py").write_text("")
    (tmp_path / "sdm" / "store.py").write_text("def count(rows):\n    return len(rows) + 'rows'\n")
    done = run_mypy(tmp_path, "sdm/store.py")
    assert done.returncode == 1 and "[operator]" in done.stdout, done.stdout
