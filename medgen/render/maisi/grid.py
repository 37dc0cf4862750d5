"""The output grids MAISI renders, checked before any weights load.

NVIDIA's rules for the CT models (NV-Generate-CTMR ``check_input_ct``): X = Y in {256, 384, 512} voxels,
Z in {128, 256, 384, 512, 640, 768}; spacing X = Y in [0.5, 3.0] mm, Z in [0.5, 5.0] mm; an in-plane field of
view of at least 256 mm. The latent grid is the image grid / 4. medgen writes MAISI's volumes on an RAS+
axis-aligned grid centred on the world origin (`medgen.volume.make_affine`).
"""

from __future__ import annotations

import numpy as np

from medgen.errors import MedgenError
from medgen.volume import make_affine

SIZES_XY = (256, 384, 512)
SIZES_Z = (128, 256, 384, 512, 640, 768)
SPACING_XY_MM = (0.5, 3.0)
SPACING_Z_MM = (0.5, 5.0)
MIN_FOV_XY_MM = 256.0
LATENT_FACTOR = 4
DEFAULT_SHAPE = (512, 512, 256)
DEFAULT_SPACING = (0.75, 0.75, 1.25)  # 384 x 384 x 320 mm: a whole adult chest


class MaisiGridError(MedgenError, ValueError):
    """A shape or spacing MAISI does not render (refused before any weights load)."""


def check_maisi_grid(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(shape, spacing) as tuples when MAISI renders that grid; `MaisiGridError` (one sentence) otherwise.

    `spacing` may be one number (isotropic) or three."""
    try:
        shape = tuple(int(s) for s in shape)
        spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    except (TypeError, ValueError):
        raise MaisiGridError(f"MAISI needs a shape of three integers and a spacing of one or three numbers, "
                             f"got {shape!r} / {spacing!r}") from None
    if len(shape) != 3:
        raise MaisiGridError(f"MAISI needs a shape of three integers (X Y Z), got {shape}")
    rule = (f"MAISI renders X = Y in {list(SIZES_XY)} and Z in {list(SIZES_Z)} voxels at X = Y spacing "
            f"{SPACING_XY_MM[0]}-{SPACING_XY_MM[1]} mm and Z spacing {SPACING_Z_MM[0]}-{SPACING_Z_MM[1]} mm")
    if shape[0] != shape[1] or shape[0] not in SIZES_XY or shape[2] not in SIZES_Z:
        raise MaisiGridError(f"shape {shape} is not a MAISI grid: {rule}")
    if not all(np.isfinite(spacing)) or abs(spacing[0] - spacing[1]) > 1e-6:
        raise MaisiGridError(f"spacing {spacing} mm is not a MAISI spacing: {rule}")
    if not (SPACING_XY_MM[0] <= spacing[0] <= SPACING_XY_MM[1] and SPACING_Z_MM[0] <= spacing[2] <= SPACING_Z_MM[1]):
        raise MaisiGridError(f"spacing {spacing} mm is not a MAISI spacing: {rule}")
    if shape[0] * spacing[0] < MIN_FOV_XY_MM:
        raise MaisiGridError(f"shape {shape} at {spacing} mm gives an in-plane field of view of "
                             f"{shape[0] * spacing[0]:g} mm; MAISI needs at least {MIN_FOV_XY_MM:g} mm")
    return shape, spacing


def maisi_affine(shape, spacing) -> np.ndarray:
    """RAS+ affine of a MAISI output grid, centred on the world origin."""
    return make_affine(shape, spacing)


def latent_shape(shape, latent_channels: int) -> tuple[int, int, int, int]:
    """(C, X/4, Y/4, Z/4): the latent MAISI's diffusion model denoises for an output `shape`."""
    return (int(latent_channels), *(int(s) // LATENT_FACTOR for s in shape))
