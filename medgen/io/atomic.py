"""Atomic file output: write to a temporary sibling, then rename, so no half-written file is left.

Temporary files and folders are removed on failure, and on SIGTERM too (`removed_on_sigterm`); private
staging folders (`staging_dir`) that a killed process (SIGKILL, power loss) left behind are removed by the
next save into the same folder once their process is gone or they are `STALE_STAGING_S` old.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

from medgen.errors import MedgenError, OutputExistsError

STAGING_PREFIX = ".medgen-save."
STALE_STAGING_S = 3600.0  # a staging folder this old is a leftover, whoever made it


def check_output_path(path, overwrite: bool = False) -> Path:
    """Fail early (before any work) if `path` exists without `overwrite`, or cannot be written: its nearest
    existing folder is a file, or is not writable (read-only file system, permissions, ``/proc``). The folder is
    probed by making and removing an empty hidden folder in it, so what the OS would refuse is refused here."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists (pass overwrite=True / --overwrite to replace it)")
    probe = path.parent if str(path.parent) else Path(".")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise MedgenError(f"{path}: cannot be written: {probe} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".medgen-probe.", dir=probe))
    except OSError as err:
        raise MedgenError(f"{path}: output folder {probe} is not writable ({err.strerror or err})") from None
    return path


# ------------------------------------------------------------------------------------ cleanup on SIGTERM
_active: set[Path] = set()  # temporary outputs of this process that SIGTERM must not leave behind
_lock = threading.Lock()
_previous_handler = None  # the SIGTERM handler ours replaced while `_active` is not empty


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _on_sigterm(signum, frame):
    """Remove this process's temporary outputs, then let SIGTERM do what it did before (by default: end)."""
    for path in list(_active):
        _remove(path)
    _active.clear()
    previous = _previous_handler
    _restore_handler()
    if callable(previous):
        previous(signum, frame)
    else:
        os.kill(os.getpid(), signum)  # the default action, with the usual exit status


def _restore_handler() -> None:
    global _previous_handler
    if _previous_handler is not None:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, _previous_handler)
        _previous_handler = None


@contextlib.contextmanager
def removed_on_sigterm(path):
    """Within the block, `path` (a temporary file or folder) is removed if the process receives SIGTERM.
    The handler is installed from the main thread only, and never where SIGTERM is ignored."""
    global _previous_handler
    path = Path(path)
    with _lock:
        if not _active and threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            if current not in (signal.SIG_IGN, None, _on_sigterm):
                signal.signal(signal.SIGTERM, _on_sigterm)
                _previous_handler = current
        _active.add(path)
    try:
        yield path
    finally:
        with _lock:
            _active.discard(path)
            if not _active and threading.current_thread() is threading.main_thread():
                _restore_handler()


# --------------------------------------------------------------------------------------- staging folders
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def is_stale_staging(folder: Path, max_age_s: float = STALE_STAGING_S) -> bool:
    """A staging folder (``.medgen-save.<host>.<pid>.<random>``) whose process on this host has ended, or
    that is older than `max_age_s` (made on another host, or named before the pid was part of the name)."""
    try:
        age = time.time() - folder.stat().st_mtime
    except OSError:
        return False
    parts = folder.name[len(STAGING_PREFIX):].split(".")
    if len(parts) == 3 and parts[0] == _host() and parts[1].isdigit():
        pid = int(parts[1])
        if pid != os.getpid() and not _process_alive(pid):
            return True
    return age > max_age_s


def remove_stale_staging(parent, max_age_s: float = STALE_STAGING_S) -> list[Path]:
    """Remove the stale staging folders in `parent` (see `is_stale_staging`); returns what was removed."""
    parent = Path(parent)
    removed = []
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and is_stale_staging(entry, max_age_s):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def staging_dir(parent):
    """A private hidden folder in `parent` (made if missing) to write outputs into before they are renamed
    into place; removed on leaving the block and on SIGTERM. Stale ones left in `parent` are removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_host()}.{os.getpid()}.", dir=parent))
    try:
        with removed_on_sigterm(stage):
            yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _default_mode(directory: bool) -> int:
    """Permissions a plain open()/mkdir() would give under the current umask (mkstemp/mkdtemp use 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = True):
    """Yield a temporary path next to `path` (same suffixes); rename onto `path` only on success."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists (pass overwrite=True / --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        with removed_on_sigterm(tmp):
            yield tmp
            if tmp.exists():  # else the caller's os.replace fails below with the real error
                os.chmod(tmp, _default_mode(directory=False))
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = False):
    """Yield a temporary folder next to `path`; it replaces `path` only on success."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists (pass overwrite=True / --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        with removed_on_sigterm(tmp):
            yield tmp
            # everything inside gets the umask's usual modes: mkdtemp gives 0700 and some writers (safetensors)
            # create their files 0600, which would leave model folders unreadable to the group
            for folder, dirs, files in os.walk(tmp):
                for name in dirs:
                    os.chmod(os.path.join(folder, name), _default_mode(directory=True))
                for name in files:
                    os.chmod(os.path.join(folder, name), _default_mode(directory=False))
            os.chmod(tmp, _default_mode(directory=True))
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
