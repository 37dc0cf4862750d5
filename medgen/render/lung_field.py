"""The lung field holds only what the layout puts there: no lesion-sized bright structure away from findings.

The layout-conditioned decoder of the embedded model paints lesion-like blobs (about 25 mm, -700 HU) into normal
lung, even from a zero latent (docs/studies/blob_source.md). Inside the layout's aerated lobes, farther than
`margin_mm` from every lesion, effusion and emphysema label, a grey opening with a ball of radius `radius_mm`
keeps exactly the bright structures wide enough to hold that ball; their excess over the lobe's median HU is
taken out, with their rim. Narrower structure (vessels, texture, noise) and everything darker is left as rendered, so by
construction nothing bright and lesion-sized remains where the layout holds normal lung.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from medgen.findings import EMPHYSEMA_LABEL, FIRST_LESION_LABEL, LABELS, LOBE_LABELS

DEFAULT_RADIUS_MM = 7.5  # a ball 15 mm across: wider than any vessel at the native 5 mm grid
DEFAULT_MARGIN_MM = 10.0  # around findings the renderer draws freely (lesion edges, fluid menisci)


def ball(radius_mm: float, spacing) -> np.ndarray:
    """Boolean footprint of a ball of `radius_mm` on a grid of `spacing` mm (at least the centre voxel)."""
    half = [max(int(np.floor(radius_mm / s)), 0) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing, strict=True)) <= 1.0


def normal_lung_field(labels: np.ndarray, spacing, margin_mm: float = DEFAULT_MARGIN_MM) -> np.ndarray:
    """Voxels of aerated lobes farther than `margin_mm` from every lesion, effusion and emphysema label."""
    findings = (labels >= FIRST_LESION_LABEL) | (labels == LABELS["effusion"]) | (labels == EMPHYSEMA_LABEL)
    lung = np.isin(labels, list(LOBE_LABELS.values()))
    if findings.any():
        far = ndi.distance_transform_edt(~findings, sampling=spacing) > margin_mm
        lung &= far
    return lung


def remove_unasked_structure(hu: np.ndarray, labels: np.ndarray, spacing, *, radius_mm: float = DEFAULT_RADIUS_MM,
                             margin_mm: float = DEFAULT_MARGIN_MM, tolerance_hu: float = 0.0,
                             dark: bool = False) -> np.ndarray:
    """`hu` (X, Y, Z) with the bright lesion-sized structure of the normal lung field taken out (a new array).

    Args:
        hu: rendered HU on the layout's grid.
        labels: the layout label map (`medgen.layout.label_table` values), same shape.
        spacing: voxel size in mm.
        tolerance_hu: wide structure up to this far from the lobe median stays (gravity gradient, texture).
        dark: also lift wide structure darker than the lobe median (unasked emphysema-like patches) back to it.
    """
    hu = np.asarray(hu, np.float32)
    if hu.shape != labels.shape:
        raise ValueError(f"`hu` {hu.shape} and `labels` {labels.shape} must share a grid")
    field = normal_lung_field(labels, spacing, margin_mm)
    if not field.any():
        return hu.copy()
    baseline = np.zeros_like(hu)
    for value in LOBE_LABELS.values():
        lobe = field & (labels == value)
        if lobe.any():
            baseline[lobe] = np.median(hu[lobe])
    # outside the field the openings see lung HU: chest wall and mediastinum do not count as wide structure
    inside = np.where(field, hu, np.float32(np.median(hu[field])))
    footprint = ball(radius_mm, spacing)
    out = hu - _wide_excess(inside, hu, baseline, field, footprint, tolerance_hu)
    if dark:  # the same on the negated image: wide dark patches come back up to the baseline
        out = out + _wide_excess(-inside, -hu, -baseline, field, footprint, tolerance_hu)
    return out.astype(np.float32)


def _wide_excess(inside, hu, baseline, field, footprint, tolerance_hu: float) -> np.ndarray:
    """How far above `baseline + tolerance_hu` each field voxel of a structure wide enough to hold `footprint` is
    (the grey opening keeps exactly those); a wide structure's rim, where the ball no longer fits, goes with it."""
    opened = ndi.grey_opening(inside, footprint=footprint)
    excess = np.where(field, np.maximum(opened - baseline - tolerance_hu, 0.0), 0.0)
    reach = ndi.grey_dilation(excess, footprint=footprint)
    return np.where(field, np.clip(np.minimum(hu - baseline - tolerance_hu, reach), 0.0, None), 0.0)
