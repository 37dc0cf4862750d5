"""medgen.io: NIfTI and DICOM volumes, JSON provenance sidecars, atomic output."""

from __future__ import annotations

from pathlib import Path

from medgen.errors import InputFileError
from medgen.io.dicom import read_dicom_series, write_dicom_series
from medgen.io.nifti import is_nifti_path, load_nifti, reorient, save_nifti
from medgen.io.sidecar import provenance, read_sidecar, sidecar_path, write_sidecar
from medgen.volume import Volume

__all__ = [
    "load_volume", "load_nifti", "save_nifti", "read_dicom_series", "write_dicom_series", "reorient",
    "sidecar_path", "write_sidecar", "read_sidecar", "provenance",
]


def load_volume(path) -> Volume:
    """Read a canonical RAS+ float32 HU `Volume`: a folder is a DICOM series, ``.nii``/``.nii.gz`` NIfTI,
    ``.dcm`` a single DICOM slice; anything else raises `InputFileError`."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "not found")
    if path.is_dir() or path.suffix.lower() == ".dcm":
        return read_dicom_series(path)
    if is_nifti_path(path):
        return load_nifti(path)
    raise InputFileError(path, "unknown volume format (expected a DICOM folder, .nii or .nii.gz)")
