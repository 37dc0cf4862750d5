"""Atomic outputs: nothing half-written on failure, and the final files get the usual umask permissions."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from medgen.io import save_nifti
from medgen.io.atomic import atomic_dir, atomic_path
from medgen.volume import Volume, make_affine


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_umask_permissions_not_tempfile_ones(tmp_path, umask_022):
    with atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("y")
    assert mode(tmp_path / "a.txt") == 0o644  # mkstemp alone gives 0600: unreadable to the group
    assert mode(tmp_path / "folder") == 0o755  # mkdtemp alone gives 0700
    volume = Volume(np.zeros((4, 4, 4), np.float32), make_affine((4, 4, 4), 2.0))
    save_nifti(volume, tmp_path / "v.nii.gz")
    assert mode(tmp_path / "v.nii.gz") == 0o644


def test_files_written_0600_inside_an_atomic_folder_become_readable(tmp_path, umask_022):
    """safetensors writes its files 0600; model folders saved through atomic_dir were unreadable to the group."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(tmp_path / "model") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
        (tmp / "sub").mkdir(mode=0o700)
        save_file({"w": torch.zeros(2)}, str(tmp / "sub" / "head.safetensors"))
    assert mode(tmp_path / "model" / "model.safetensors") == 0o644
    assert mode(tmp_path / "model" / "sub") == 0o755
    assert mode(tmp_path / "model" / "sub" / "head.safetensors") == 0o644


def test_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []
