"""Atomic file output: write to a temporary sibling, then rename, so no half-written file is left."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from medgen.errors import MedgenError, OutputExistsError


def check_output_path(path, overwrite: bool = False) -> Path:
    """Fail early (before any work) if `path` exists without `overwrite` or its folder is not writable."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists (pass overwrite=True / --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise MedgenError(f"{path}: output folder {probe} is not writable")
    return path


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
