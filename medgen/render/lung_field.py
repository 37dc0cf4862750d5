"""The lung field holds only what the layout puts there: no lesion-sized bright structure away from findings, and
normal lung's HU distribution where the layout holds normal lung.

The layout-conditioned decoder of the embedded model paints lesion-like blobs (about 25 mm, -700 HU) into normal
lung, even from a zero latent (docs/studies/blob_source.md). Inside the layout's aerated lobes, farther than
`margin_mm` from every lesion, effusion and emphysema label, a grey opening with a ball of radius `radius_mm`
keeps exactly the bright structures wide enough to hold that ball; their excess over the lobe's median HU is
taken out, with their rim. Narrower structure (vessels, texture, noise) and everything darker is left as rendered, so by
construction nothing bright and lesion-sized remains where the layout holds normal lung.

The decoder also darkens patches of normal lung (at phantom v2, a fifth of the lung below -950 HU where the phantoms
have 0-3 %: unasked emphysema). With `quantiles` (normal lung's HU quantiles, measured on training subjects by
`reference_quantiles`) the field's values are mapped rank for rank onto that distribution: the spatial order, so
vessels and texture, stays as rendered, the HU histogram becomes that of normal lung.
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
                             dark: bool = False, quantiles=None) -> np.ndarray:
    """`hu` (X, Y, Z) with the bright lesion-sized structure of the normal lung field taken out (a new array).

    Args:
        hu: rendered HU on the layout's grid.
        labels: the layout label map (`medgen.layout.label_table` values), same shape.
        spacing: voxel size in mm.
        tolerance_hu: wide structure up to this far from the lobe median stays (gravity gradient, texture).
        dark: also lift wide structure darker than the lobe median (unasked emphysema-like patches) back to it.
        quantiles: HU quantiles of normal lung at evenly spaced probabilities 0..1 (`reference_quantiles`); the
            field is then mapped onto that distribution, after the wide structure is taken out.
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
    if quantiles is not None:
        out[field] = match_distribution(out[field], quantiles)
        # the mapping sends the field's brightest ranks to vessel HU: where they cluster, wide bright structure can
        # form again, so the opening runs once more on the mapped field
        inside = np.where(field, out, np.float32(np.median(out[field])))
        out = out - _wide_excess(inside, out, baseline, field, footprint, tolerance_hu)
    return out.astype(np.float32)


def match_distribution(values: np.ndarray, quantiles) -> np.ndarray:
    """`values` mapped rank for rank onto the distribution whose quantiles at evenly spaced probabilities 0..1
    are `quantiles` (ties keep their order of appearance)."""
    q = np.asarray(quantiles, np.float64)
    if q.ndim != 1 or q.size < 2 or not np.all(np.diff(q) >= 0):
        raise ValueError("`quantiles` must be a non-decreasing list of at least 2 HU values")
    ranks = np.empty(values.size, np.float64)
    ranks[np.argsort(values, kind="stable")] = (np.arange(values.size) + 0.5) / max(values.size, 1)
    return np.interp(ranks, np.linspace(0.0, 1.0, q.size), q).astype(np.float32)


def reference_quantiles(pairs, spacing, *, n: int = 101, margin_mm: float = DEFAULT_MARGIN_MM) -> list[float]:
    """HU quantiles (at `n` evenly spaced probabilities) of the normal lung field of (HU, layout labels) pairs of
    real or phantom subjects, pooled: what `remove_unasked_structure(quantiles=...)` maps the field onto."""
    values = [np.asarray(hu, np.float32)[normal_lung_field(np.asarray(lab), spacing, margin_mm)] for hu, lab in pairs]
    values = np.concatenate([v for v in values if v.size] or [np.zeros(0, np.float32)])
    if not values.size:
        raise ValueError("no normal lung field in the reference subjects")
    return [round(float(v), 1) for v in np.quantile(values, np.linspace(0.0, 1.0, n))]


def _wide_excess(inside, hu, baseline, field, footprint, tolerance_hu: float) -> np.ndarray:
    """How far above `baseline + tolerance_hu` each field voxel of a structure wide enough to hold `footprint` is
    (the grey opening keeps exactly those); a wide structure's rim, where the ball no longer fits, goes with it."""
    opened = ndi.grey_opening(inside, footprint=footprint)
    excess = np.where(field, np.maximum(opened - baseline - tolerance_hu, 0.0), 0.0)
    reach = ndi.grey_dilation(excess, footprint=footprint)
    return np.where(field, np.clip(np.minimum(hu - baseline - tolerance_hu, reach), 0.0, None), 0.0)


def reference_quantiles_from_manifest(manifest, n_subjects: int = 60, *, n: int = 101) -> list[float]:
    """`reference_quantiles` of the first `n_subjects` train rows (``image`` + ``layout``) of a dataset manifest."""
    import nibabel as nib

    from medgen.dataset.manifest import read_manifest

    rows = [r for r in read_manifest(manifest) if r["split"] == "train" and r.get("layout")][: int(n_subjects)]
    if not rows:
        raise ValueError(f"{manifest}: no train rows with a layout")
    spacing = tuple(float(s) for s in nib.load(rows[0]["image"]).header.get_zooms()[:3])
    pairs = ((np.asarray(nib.load(r["image"]).dataobj), np.asarray(nib.load(r["layout"]).dataobj)) for r in rows)
    return reference_quantiles(pairs, spacing, n=n)
