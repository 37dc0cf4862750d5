"""Figures of an edit: did the added lesion land where asked, is everything else untouched, is there a seam."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion

from medgen.volume import density_to_hu


def outside_max_abs_diff(edited: np.ndarray, original: np.ndarray, region: np.ndarray) -> float:
    """Largest |edited - original| (HU) outside the regenerated region (0 when the edit kept it exactly)."""
    outside = ~region
    if not outside.any():
        return 0.0
    return float(np.abs(np.asarray(edited, np.float64) - np.asarray(original, np.float64))[outside].max())


def border_shell(region: np.ndarray) -> np.ndarray:
    """The region's outermost voxel layer (6-connected), where regenerated and kept voxels meet."""
    return region & ~binary_erosion(region)


def gradient_magnitude(hu: np.ndarray, spacing) -> np.ndarray:
    grads = np.gradient(np.asarray(hu, np.float64), *[float(s) for s in spacing])
    return np.sqrt(sum(g * g for g in grads))


def seam_ratio(edited: np.ndarray, original: np.ndarray, region: np.ndarray, spacing) -> float | None:
    """Mean gradient magnitude of the edited volume on the region's border shell over the original's on the
    same voxels: 1 when the border is as smooth as the image was, > 1 when the edit added an edge there.
    None for an empty region."""
    shell = border_shell(region)
    if not shell.any():
        return None
    before = float(gradient_magnitude(original, spacing)[shell].mean())
    after = float(gradient_magnitude(edited, spacing)[shell].mean())
    return after / max(before, 1e-6)


def match_added_lesion(measured: list, center_mm, diameter_mm: float):
    """The analyzer's lesion nearest to where the lesion was placed, if its centre lies within the lesion's
    radius + 10 mm of it (else None)."""
    best, best_d = None, diameter_mm / 2.0 + 10.0
    for lesion in measured:
        dist = float(np.linalg.norm(np.asarray(lesion.center_mm) - np.asarray(center_mm)))
        if dist <= best_d:
            best, best_d = lesion, dist
    return best


def score_added_lesion(measured: list, lesion) -> dict:
    """Found / side / lobe / size within ±30 % / mean HU within 60 HU of the target, for one added lesion."""
    found = match_added_lesion(measured, lesion.center_mm, lesion.diameter_mm)
    target = density_to_hu(lesion.density)
    if found is None:
        return {"found": False, "side": False, "lobe": False, "size_30": False, "hu_60": False,
                "hu_error": None, "size_ratio": None}
    ratio = found.diameter_mm / lesion.diameter_mm
    return {"found": True, "side": found.side == lesion.side, "lobe": found.lobe == lesion.lobe,
            "size_30": bool(abs(ratio - 1.0) <= 0.30), "hu_60": bool(abs(found.mean_hu - target) <= 60.0),
            "hu_error": round(float(found.mean_hu - target), 1), "size_ratio": round(float(ratio), 3)}
