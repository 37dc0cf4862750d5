"""medgen.io: NIfTI and DICOM volumes, JSON provenance sidecars, atomic output."""

from __future__ import annotations

from pathlib import Path

from medgen.errors import InputFileError
from medgen.io.dicom import read_dicom_series, write_dicom_series
from medgen.io.nifti import is_nifti_path, load_nifti, reorient, reorient_like, save_nifti
from medgen.io.sidecar import provenance, read_sidecar, sidecar_path, write_sidecar
from medgen.volume import Volume

__all__ = [
    "load_volume", "load_nifti", "save_nifti", "read_dicom_series", "write_dicom_series", "reorient", "reorient_like",
    "sidecar_path", "write_sidecar", "read_sidecar", "provenance",
]


def load_volume(path, *, canonical: bool = True) -> Volume:
    """Read a canonical RAS+ float32 HU `Volume`: a folder is a DICOM series, ``.nii``/``.nii.gz`` NIfTI,
    ``.dcm`` a single DICOM slice; anything else raises `InputFileError`. ``canonical=False`` keeps the
    input's own voxel order and affine (a NIfTI file's, a DICOM series' columns, rows and slices)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "not found")
    if path.is_dir() or path.suffix.lower() == ".dcm":
        return read_dicom_series(path, canonical=canonical)
    if is_nifti_path(path):
        return load_nifti(path, canonical=canonical)
    raise InputFileError(path, "unknown volume format (expected a DICOM folder, .nii or .nii.gz)")
