"""Does a slice show the findings its layout slice holds? Measured from the slice's HU inside and around
the layout's regions, so previews (which are drawn from a layout) are scored where the finding must be.

A blind 2D lesion finder was tried first and rejected on real phantom slices: at 2.5 mm in-plane, hilar
vessels and partial-volume vessel segments pass every threshold that keeps ground glass (9/9 normal key slices
got false lesions). The layout-referenced score below is validated the same way (real slices of held-out
phantoms must score ~100 %, shuffled layouts must not) in `benchmarks/bench_preview.py`.

Lesion (each layout lesion label cut by the slice with >= `MIN_LESION_PX` pixels):
- present: the median HU inside the lesion region is >= `LESION_DELTA_HU` above the median HU of the
  aerated lung of the same slice (ground glass, the faintest lesion, sits ~100 HU above lung);
- on its side: the region is brighter (median HU) than the lung part of its mirror image across the body's
  midline column (or than the lung median where the mirror misses the lung), i.e. the slice did not put the
  lesion in the other lung;
- measured density: `medgen.volume.hu_to_density` of the region's mean HU.
Effusion (layout fluid label, per side): present when the median HU of the region is fluid-like
(`FLUID_HU`), and the mirror region on a side without fluid is not.

Display orientation (`medgen.slices.data`): rows anterior -> posterior, columns patient right -> left.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import LABELS, LOBE_LABELS
from medgen.layout.labels import EMPHYSEMA_LABEL, FIRST_LESION_LABEL
from medgen.volume import hu_to_density

MIN_LESION_PX = 6
LESION_DELTA_HU = 60.0
FLUID_HU = (-60.0, 80.0)
LUNG_VALUES = [*LOBE_LABELS.values(), EMPHYSEMA_LABEL]


def _mirror(mask: np.ndarray, midline: float) -> np.ndarray:
    """The mask reflected across column `midline` (pixels falling off the slice are dropped)."""
    rows, cols = np.nonzero(mask)
    cols = np.rint(2 * midline - cols).astype(int)
    keep = (cols >= 0) & (cols < mask.shape[1])
    out = np.zeros_like(mask)
    out[rows[keep], cols[keep]] = True
    return out


def score_slice(hu: np.ndarray, labels: np.ndarray) -> dict:
    """Per-finding scores of one slice against its layout slice (same grid, display orientation).

    Returns {"lesions": [{"label", "pixels", "present", "on_side", "median_hu", "density"}...],
    "effusion": [{"side", "present"}...], "lung_hu": median lung HU}.
    """
    hu, labels = np.asarray(hu, np.float32), np.asarray(labels)
    if hu.shape != labels.shape or hu.ndim != 2:
        raise ValueError(f"`hu` {hu.shape} and `labels` {labels.shape} must be the same 2D grid")
    lung = np.isin(labels, LUNG_VALUES)
    body = labels > 0
    if not lung.any():
        raise ValueError("the layout slice holds no lung")
    lung_hu = float(np.median(hu[lung]))
    midline = float(np.argwhere(body)[:, 1].mean())
    lesions = []
    for value in np.unique(labels[labels >= FIRST_LESION_LABEL]):
        region = labels == value
        if region.sum() < MIN_LESION_PX:
            continue
        inside = float(np.median(hu[region]))
        mirror = _mirror(region, midline) & lung  # the other lung only: a mirror in the mediastinum says nothing
        outside = float(np.median(hu[mirror])) if mirror.sum() >= 3 else lung_hu
        lesions.append({"label": int(value), "pixels": int(region.sum()),
                        "present": inside >= lung_hu + LESION_DELTA_HU, "on_side": inside > outside,
                        "median_hu": round(inside, 1), "density": round(hu_to_density(float(hu[region].mean())), 3)})
    effusion = []
    fluid = labels == LABELS["effusion"]
    for side, half in (("right", np.arange(labels.shape[1]) < midline), ("left", np.arange(labels.shape[1]) >= midline)):
        region = fluid & half[None, :]
        if region.sum() < MIN_LESION_PX:
            continue
        median = float(np.median(hu[region]))
        effusion.append({"side": side, "present": bool(FLUID_HU[0] <= median <= FLUID_HU[1]),
                         "median_hu": round(median, 1)})
    return {"lesions": lesions, "effusion": effusion, "lung_hu": round(lung_hu, 1)}
