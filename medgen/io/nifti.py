"""NIfTI read/write: RAS+ voxel order, sform and qform set, millimetres, int16 HU, labelled SYNTHETIC."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from medgen.errors import InputFileError
from medgen.io.atomic import atomic_path, check_output_path
from medgen.io.sidecar import sidecar_path, write_sidecar
from medgen.volume import Volume

DESCRIP_PREFIX = "SYNTHETIC"
DESCRIP_MAX_BYTES = 80
# Both transforms are written with code 1 (scanner anatomical coordinates).
XFORM_CODE = 1


def is_nifti_path(path) -> bool:
    """True for names ending in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def reorient(volume: Volume, axcodes: str = "RAS") -> Volume:
    """Permute/flip voxel axes so they increase toward `axcodes` (closest axes for oblique grids).

    Same operation as ``nibabel.as_closest_canonical`` for ``"RAS"``; world positions of voxels are
    unchanged. Returns `volume` itself when it is already in that order.
    """
    current = ornt.io_orientation(volume.affine)
    target = ornt.axcodes2ornt(tuple(axcodes))
    if np.array_equal(current, target):
        return volume
    transform = ornt.ornt_transform(current, target)
    array = ornt.apply_orientation(volume.array, transform)
    affine = volume.affine @ ornt.inv_ornt_aff(transform, volume.array.shape)
    return Volume(np.ascontiguousarray(array), affine, dict(volume.meta))


def reorient_like(volume: Volume, reference: Volume) -> Volume:
    """`volume` (the same world grid as `reference`, in any voxel order) in `reference`'s voxel order, with
    `reference`'s affine exactly (no round-off from flipping twice). Raises ValueError for another grid."""
    out = reorient(volume, "".join(nib.aff2axcodes(reference.affine)))
    if out.shape != reference.shape or not np.allclose(out.affine, reference.affine, atol=1e-4):
        raise ValueError(f"volume {volume.shape} is not on the reference grid {reference.shape} "
                         f"(affine {np.round(reference.affine, 3).tolist()})")
    return Volume(out.array, np.asarray(reference.affine, float).copy(), dict(volume.meta))


def synthetic_descrip(descrip: str) -> bytes:
    """`descrip` prefixed with ``SYNTHETIC`` when it lacks it, as at most 80 bytes of UTF-8."""
    text = str(descrip).strip()
    if not text.startswith(DESCRIP_PREFIX):
        text = f"{DESCRIP_PREFIX} {text}".strip()
    raw = text.encode("utf-8")[:DESCRIP_MAX_BYTES]
    return raw.decode("utf-8", errors="ignore").encode("utf-8")  # never cut a character in half


def cast_voxels(array: np.ndarray, dtype) -> np.ndarray:
    """Cast to `dtype`; integer targets are rounded and clipped to their range. Non-finite values fail."""
    dtype = np.dtype(dtype)
    array = np.asarray(array)
    if np.issubdtype(dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                raise ValueError(f"volume has {int((~np.isfinite(array)).sum())} non-finite voxels; cannot write {dtype}")
            array = np.rint(array)
        info = np.iinfo(dtype)
        if array.dtype != dtype:
            array = np.clip(array, info.min, info.max)
    return array.astype(dtype, copy=False)


def save_nifti(
    volume: Volume,
    path,
    *,
    sidecar: dict | None = None,
    descrip: str = "SYNTHETIC medgen",
    dtype=np.int16,
    overwrite: bool = True,
    canonical: bool = True,
    scaling: tuple[float, float] | None = None,
) -> Path:
    """Write `volume` as NIfTI-1 (``.nii`` or ``.nii.gz``), RAS+ voxel order.

    Args:
        volume: HU (or labels) with its RAS+ world affine; any voxel order (reoriented to RAS+).
        path: output file, ``.nii`` or ``.nii.gz``.
        sidecar: provenance written to ``<name>.json`` beside the image (see `medgen.io.sidecar`).
        descrip: header description; ``SYNTHETIC`` is prefixed when missing; cut to 80 bytes.
        dtype: voxel type on disk; int16 HU by default (rounded and clipped), uint8 for label maps.
        overwrite: replace an existing image/sidecar (otherwise OutputExistsError before any work).
        canonical: reorient to RAS+ (default); False keeps the volume's own voxel order and affine (an edit
            written on its input's grid).
        scaling: ``(slope, inter)`` to store ``(value - inter) / slope`` with that header scaling (an edit
            keeping its input's storage); None stores the values themselves (slope 1, intercept 0).

    Returns:
        The image path. Both image and sidecar are written atomically.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"`path` must end in .nii or .nii.gz, got {path.name!r}")
    check_output_path(path, overwrite)
    if sidecar is not None:
        check_output_path(sidecar_path(path), overwrite)

    canonical = reorient(volume, "RAS") if canonical else volume
    slope, inter = (1.0, 0.0) if scaling is None else (float(scaling[0]), float(scaling[1]))
    values = canonical.array if scaling is None else (np.asarray(canonical.array, np.float64) - inter) / slope
    data = cast_voxels(values, dtype)
    img = nib.Nifti1Image(data, canonical.affine)
    header = img.header
    header.set_data_dtype(data.dtype)
    img.set_sform(canonical.affine, code=XFORM_CODE)
    img.set_qform(canonical.affine, code=XFORM_CODE)
    header.set_xyzt_units(xyz="mm", t="sec")
    header.set_slope_inter(slope, inter)
    header["descrip"] = synthetic_descrip(descrip)

    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, tmp)
    if sidecar is not None:
        write_sidecar(path, sidecar)
    return path


# What nibabel/gzip/numpy raise on a file that is not NIfTI, truncated or corrupt.
_READ_ERRORS = (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError, gzip.BadGzipFile, zlib.error)


def load_nifti(path, *, canonical: bool = True) -> Volume:
    """Read a NIfTI-1/2 image as a canonical RAS+ `Volume` of float32 (header scaling applied).

    Label maps come back as float32 too (``volume.array.astype(np.uint8)`` recovers them exactly).
    ``meta`` holds ``path``, ``descrip`` and ``storage`` (on-disk ``dtype``, scaling ``slope`` and ``inter``).
    With ``canonical=False`` the file's own voxel order and affine are kept. A missing file, another format, a
    truncated or corrupt file, or a non-3D image raise `InputFileError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not a NIfTI file")
    try:
        img = nib.load(path)
    except _READ_ERRORS as err:
        raise InputFileError(path, f"not a readable NIfTI file ({err})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputFileError(path, f"not a NIfTI file (nibabel read it as {type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputFileError(path, f"expected a 3D image, got shape {img.shape}")
    try:
        data = img.get_fdata(dtype=np.float32).reshape(shape)
    except _READ_ERRORS as err:
        raise InputFileError(path, f"truncated or corrupt NIfTI data ({err})") from None
    descrip = img.header["descrip"].item().decode("utf-8", errors="replace")
    slope, inter = (float(v) for v in (img.dataobj.slope, img.dataobj.inter))
    storage = {"dtype": str(img.get_data_dtype()), "slope": slope, "inter": inter}
    volume = Volume(data, img.affine, {"path": str(path), "descrip": descrip, "storage": storage})
    return reorient(volume, "RAS") if canonical else volume
