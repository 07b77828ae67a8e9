"""Where the gateway keeps what must survive a restart, and how a file there is replaced safely.

The state directory holds small files that are the gateway's memory between runs: the last
accepted value of every energy counter (sdm.sanity) and, later, the learned timing of each
meter.  Its place follows the conventions a service manager or a desktop user expects:

1. ``--state-dir`` when given;
2. ``$STATE_DIRECTORY``, set by systemd for a unit with ``StateDirectory=`` (when the unit lists
   several, systemd joins them with ``:``; the first is ours);
3. ``$XDG_STATE_HOME/sdm`` (the XDG base directory spec; a relative value is invalid and ignored);
4. ``~/.local/state/sdm``, the XDG default.

A file is written by :func:`atomic_write`: a reader (or a gateway restarted after SIGKILL or a
power cut) sees either the old or the new content, never a mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional

APP_DIR = "sdm"


class StateError(Exception):
    """The state directory cannot be found or made; the message says which path and why."""


def resolve_state_dir(given: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Path:
    """The state directory by the rules above, without touching the file system."""
    env = os.environ if environ is None else environ
    if given:
        return Path(given).expanduser()
    systemd = [part for part in env.get("STATE_DIRECTORY", "").split(":") if part]
    if systemd:
        return Path(systemd[0])
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_DIR
    home = env.get("HOME") or _home_from_passwd()
    return Path(home) / ".local" / "state" / APP_DIR


def _home_from_passwd() -> str:
    try:
        return str(Path.home())
    except (RuntimeError, KeyError) as err:   # no $HOME and no passwd entry (a bare container user)
        raise StateError(f"no home directory to keep state in ({err}); pass --state-dir") from None


def state_dir(given: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Path:
    """The state directory, created (private to the user) if it does not exist yet."""
    path = resolve_state_dir(given, environ)
    if path.exists() and not path.is_dir():
        raise StateError(f"state directory {path} is not a directory")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise StateError(f"cannot create state directory {path}: {err.strerror or err}") from None
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash at any moment leaves the old or the new file.

    The bytes go to a temporary file in the same directory, are flushed to the disk (fsync),
    and the temporary file is renamed over the target; the directory is synced too, so that the
    rename itself survives a power cut.  OSError on failure, with the temporary file removed.
    """
    directory = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise
    _sync_directory(directory)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_directory(directory: Path) -> None:
    """fsync a directory so a rename in it is durable (not possible on every platform)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
