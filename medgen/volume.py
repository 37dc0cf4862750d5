"""The `Volume` type (voxels + affine travel together) and the HU / density conventions.

Array layout: ``array[i, j, k]`` is indexed like the NIfTI voxel grid; ``affine`` maps voxel
indices to RAS+ world millimetres (+x = patient's right, +y = anterior, +z = superior).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# One documented intensity window for every network: HU in [-1024, 1024] -> [-1, 1], clipped.
HU_WINDOW = (-1024.0, 1024.0)
# What CT scanners store, in HU: padding outside the reconstruction circle down to -3024, the extended CT
# scale (metal) up to 30710. A CT with values outside is not in HU (raw stored values, or scaled).
CT_HU_RANGE = (-3024.0, 30710.0)
# Lung window used for previews (centre -600, width 1500).
LUNG_WINDOW = (-1350.0, 150.0)

# Density control: d in [0, 1] is the mean attenuation of the focal lesions.
DENSITY_HU_AT_ZERO = -750.0
DENSITY_HU_SPAN = 800.0
# Default d implied by report words (ground-glass, part-solid, solid).
DENSITY_WORD_DEFAULTS = {"ground-glass": 0.15, "part-solid": 0.5, "solid": 0.95}


def hu_to_intensity(hu):
    """HU -> network intensity in [-1, 1] (clipped to the window). Works on numpy arrays and tensors."""
    lo, hi = HU_WINDOW
    scaled = (hu - lo) / (hi - lo) * 2.0 - 1.0
    return scaled.clip(-1.0, 1.0)


def intensity_to_hu(x):
    """Network intensity in [-1, 1] -> HU; the exact inverse of `hu_to_intensity` inside the window."""
    lo, hi = HU_WINDOW
    return (x.clip(-1.0, 1.0) + 1.0) / 2.0 * (hi - lo) + lo


def density_to_hu(d: float) -> float:
    """Target mean lesion HU for density ``d``: -750 + 800 * d."""
    return DENSITY_HU_AT_ZERO + DENSITY_HU_SPAN * float(d)


def hu_to_density(hu: float) -> float:
    """Inverse of `density_to_hu`, clipped to [0, 1] (used to label training lesions from masks)."""
    return float(np.clip((float(hu) - DENSITY_HU_AT_ZERO) / DENSITY_HU_SPAN, 0.0, 1.0))


def density_class(d: float) -> str:
    """Word class of a density value: 'ground-glass' (< 1/3), 'part-solid' (< 2/3) or 'solid'."""
    if d < 1.0 / 3.0:
        return "ground-glass"
    if d < 2.0 / 3.0:
        return "part-solid"
    return "solid"


def check_density(density) -> float | None:
    """Validate a user density; returns a float in [0, 1] or None."""
    if density is None:
        return None
    try:
        value = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"`density` must be a number in [0, 1] or None, got {density!r}") from None
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`density` must be in [0, 1] or None, got {density}")
    return value


def make_affine(shape, spacing, origin=None) -> np.ndarray:
    """RAS+ affine for an axis-aligned grid, centred on world (0, 0, 0) unless `origin` is given.

    Args:
        shape: (X, Y, Z) voxels.
        spacing: one float (isotropic) or (sx, sy, sz) in mm.
        origin: world position (mm) of voxel (0, 0, 0).
    """
    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,)).copy()
    shape = np.asarray(shape, dtype=float)
    if origin is None:
        origin = -(shape - 1) / 2.0 * spacing
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@dataclass
class Volume:
    """A 3D image whose geometry travels with the voxels.

    Args:
        array: (X, Y, Z) voxel data, indexed like the NIfTI grid.
        affine: (4, 4) voxel-index -> RAS+ world (mm).
        meta: free-form provenance (report, seed, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.array = np.asarray(self.array)
        self.affine = np.asarray(self.affine, dtype=float)
        if self.array.ndim != 3:
            raise ValueError(f"`array` must be 3D (X, Y, Z), got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"`affine` must be 4x4, got shape {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def origin(self) -> tuple[float, float, float]:
        return tuple(float(o) for o in self.affine[:3, 3])

    @property
    def orientation(self) -> str:
        """Axis codes such as 'RAS' (nibabel convention: the direction each axis increases toward)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))

    def world_coordinates(self, index) -> np.ndarray:
        """World (mm) position of voxel index/indices (..., 3)."""
        index = np.asarray(index, dtype=float)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry and meta, new voxels (shape must match)."""
        if np.shape(array) != self.array.shape:
            raise ValueError(f"new array shape {np.shape(array)} != volume shape {self.array.shape}")
        return Volume(array, self.affine.copy(), dict(self.meta))

    def __repr__(self) -> str:
        sp = "x".join(f"{s:g}" for s in self.spacing)
        return (
            f"Volume(shape={self.shape}, spacing={sp} mm, orientation={self.orientation}, "
            f"origin={tuple(round(o, 2) for o in self.origin)}, dtype={self.array.dtype})"
        )
