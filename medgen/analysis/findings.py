"""`analyze_volume`: measure the findings of a chest CT from its HU and geometry alone.

The analyzer never sees how a volume was made, so it can judge generated volumes. Every threshold
below is physical (HU) or geometric (mm, fractions of a lung) and was calibrated on procedural
phantoms; docs/studies/validate_analyzer.py measures its accuracy (docs/studies/analyzer_accuracy.md).

Typical use::

    from medgen.analysis import analyze_volume
    analysis = analyze_volume(volume)            # Volume with int16 HU and a RAS+ affine
    analysis.lesions[0].lobe, analysis.effusion, analysis.emphysema_grade, analysis.to_dict()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from medgen.analysis.lesions import find_lesions, lesion_box_mask, measure
from medgen.analysis.segment import (
    SIDE_CODE,
    ChestSegmentation,
    assign_lobe,
    bbox,
    dilate_mm,
    lung_geometry,
    opening_mm,
    segment_chest,
)
from medgen.volume import Volume

# ---- emphysema: % of aerated lung below -950 HU (LAA-950); phantom calibration in analyzer_accuracy.md
LAA_HU = -950.0
EMPHYSEMA_THRESHOLDS = (("severe", 24.0), ("moderate", 11.5), ("mild", 3.0))  # LAA% >= value
# ---- pleural effusion: fluid-density (after smoothing) non-lung tissue next to the lung, per side
FLUID_HU = (-25.0, 25.0)  # pleural fluid 0..+20 HU; muscle and blood are >= +35, fat <= -80
FLUID_SMOOTH_MM = 3.0  # smoothing that ignores air and fat voxels (normalised convolution)
FLUID_MEDIAL_MM = 5.0  # fluid stays lateral of the lung's medial edge (spinal canal, mediastinum)
# A fluid region lies against the lung. Contact ratio = voxels touching the lung / (region voxels)^(2/3):
# phantom effusions score >= 0.89 (1.3 typical, never above 1.8) unless they are thick and large, and
# then touch the lung over a large area; tissue separated from the lung by a muscle layer (below the
# diaphragm, chest wall) scores lower; a pleural-based mass wrapped in lung scores higher.
FLUID_CONTACT = (0.85, 2.5)  # accepted contact-ratio range
FLUID_CONTACT_MM2 = 1500.0  # or a contact area at least this large (with the ratio below the upper bound)
# supine pleural fluid is dependent: a region's centroid lies in the posterior part of its side's AP extent (lung +
# region). Phantom effusions of every grade sit at <= 0.34 (v1) / 0.27 (v2); at phantom v2, partial-volume tissue
# under the left dome (stomach, diaphragm) sits at 0.39-0.44 (calibration range; docs/studies/analyzer_accuracy.md)
FLUID_MAX_AP_FRACTION = 0.37
# fraction of the side's lung territory (aerated cavity + fluid) that is fluid
EFFUSION_THRESHOLDS = (("large", 0.265), ("moderate", 0.10), ("small", 0.01))
PERCENTILES = (5, 15, 50, 85, 95)


@dataclass
class MeasuredLesion:
    """One lesion: side/zone/lobe from geometry, centre in RAS+ mm, size from the segmented volume.

    `diameter_mm` is the equivalent-sphere diameter of the mask, `mean_hu` its mean (what the density
    control sets), `core_hu` the mean of its interior (deeper than half its radius).
    """

    side: str
    zone: str
    lobe: str | None
    center_mm: tuple
    diameter_mm: float
    mean_hu: float
    core_hu: float
    volume_ml: float


@dataclass
class MeasuredEffusion:
    """Pleural effusion: side ('left', 'right', 'bilateral'), grade of the larger side, fluid ml per side."""

    side: str
    grade: str
    volume_ml_left: float
    volume_ml_right: float


@dataclass
class Analysis:
    """What the analyzer measured. Volumes in ml, positions in RAS+ world mm, HU values."""

    lesions: list[MeasuredLesion] = field(default_factory=list)
    effusion: MeasuredEffusion | None = None
    emphysema_grade: str | None = None
    lung_hu_percentiles: dict = field(default_factory=dict)
    lung_pct_below_950: float = 0.0
    lung_volume_ml: dict = field(default_factory=dict)
    is_normal: bool = True

    def to_dict(self) -> dict:
        """JSON-serialisable dict (tuples become lists, numpy scalars become floats)."""
        return _plain(asdict(self))


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return round(float(obj), 3)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def segment_fluid(seg: ChestSegmentation) -> np.ndarray:
    """Pleural fluid by side (uint8, `SIDE_CODE`), canonical voxel order.

    Candidates are body voxels outside the lung cavity whose HU, smoothed over non-air non-fat tissue
    only, lies in `FLUID_HU`; a 1-voxel opening removes partial-volume shells. Each candidate joins the
    nearest lung; it must lie within that lung's height and lateral of its medial edge (row by row),
    and its connected region must lie against the lung (`FLUID_CONTACT`).
    """
    sp = seg.spacing
    out = np.zeros(seg.hu.shape, np.uint8)
    box = bbox(seg.cavity > 0, int(np.ceil(80.0 / sp.min())))
    if box is None:
        return out
    hu, cav, body = seg.hu[box], seg.cavity[box], seg.body[box]
    tissue = (hu > -60.0) & (hu < 150.0) & body
    sigma = FLUID_SMOOTH_MM / sp
    smooth = ndi.gaussian_filter(np.where(tissue, hu, 0.0).astype(np.float32), sigma)
    smooth /= np.maximum(ndi.gaussian_filter(tissue.astype(np.float32), sigma), 1e-3)
    cand = tissue & (cav == 0) & (smooth > FLUID_HU[0]) & (smooth < FLUID_HU[1])
    cand = opening_mm(cand, 5.0, sp)
    if not cand.any():
        return out
    # one transform gives each voxel's distance to the lung cavity and its nearest cavity voxel (side)
    dist, nearest = ndi.distance_transform_edt(cav == 0, sampling=sp, return_indices=True)
    side = cav[tuple(nearest)]
    x, _, z = (axis[box[d]] for d, axis in enumerate(seg.axes()))
    xx = np.broadcast_to(x, cav.shape)
    for code in SIDE_CODE.values():
        lung = cav == code
        if not lung.any():
            cand &= side != code
            continue
        zs = np.broadcast_to(z, cav.shape)[lung]
        # medial edge per coronal row (y); rows without lung borrow the nearest row's edge
        edge = (np.where(lung, xx, np.inf).min(axis=(0, 2)) if code == SIDE_CODE["right"]
                else np.where(lung, xx, -np.inf).max(axis=(0, 2)))
        rows = np.flatnonzero(lung.any(axis=(0, 2)))
        edge = edge[rows[np.abs(np.arange(len(edge))[:, None] - rows[None, :]).argmin(axis=1)]][None, :, None]
        medial = (x < edge - FLUID_MEDIAL_MM) if code == SIDE_CODE["right"] else (x > edge + FLUID_MEDIAL_MM)
        cand &= ~((side == code) & (medial | (z < zs.min() - 10.0) | (z > zs.max())))
    # pleural fluid lies directly against the lung: a region's face contact with the cavity must be large
    # for its size (tissue below the diaphragm or in the chest wall is separated by a muscle layer)
    lab, n = ndi.label(cand)
    if n == 0:
        return out
    index = np.arange(1, n + 1)
    size = ndi.sum_labels(cand, lab, index)
    contact = ndi.sum_labels(dist <= 1.01 * sp.max(), lab, index)
    ratio = contact / size ** (2.0 / 3.0)
    area_mm2 = contact * float(np.prod(sp)) ** (2.0 / 3.0)
    keep = index[(contact > 0) & ((ratio >= FLUID_CONTACT[0]) | (area_mm2 >= FLUID_CONTACT_MM2))
                 & (ratio <= FLUID_CONTACT[1])]
    keep = keep[_dependent(lab, keep, side, cav, seg.axes()[1][:, box[1], :])]
    fluid = np.isin(lab, keep)
    out[box] = np.where(fluid, side, 0)
    return out


def _dependent(lab: np.ndarray, regions: np.ndarray, side: np.ndarray, cav: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask over `regions` (labels of `lab`): True where the region lies in the posterior `FLUID_MAX_AP_FRACTION` of
    its side's AP extent, lung and region together (RAS: +y anterior)."""
    if len(regions) == 0:
        return np.zeros(0, bool)
    yy = np.broadcast_to(y, cav.shape)
    y_mean = np.asarray(ndi.mean(yy, lab, regions))
    y_lo, y_hi = np.asarray(ndi.minimum(yy, lab, regions)), np.asarray(ndi.maximum(yy, lab, regions))
    # each region's side: the one most of its voxels are nearest to (ties: right)
    right, left = SIDE_CODE["right"], SIDE_CODE["left"]
    codes = np.where(np.asarray(ndi.sum(side == right, lab, regions)) >= np.asarray(ndi.sum(side == left, lab, regions)),
                     right, left)
    out = np.zeros(len(regions), bool)
    for code in np.unique(codes):
        lung = yy[cav == code]
        this = codes == code
        lo = np.minimum(y_lo[this], lung.min() if lung.size else np.inf)
        hi = np.maximum(y_hi[this], lung.max() if lung.size else -np.inf)
        out[this] = (y_mean[this] - lo) / np.maximum(hi - lo, 1e-6) <= FLUID_MAX_AP_FRACTION
    return out


def grade_effusion(fluid_ml: dict, lung_ml: dict) -> MeasuredEffusion | None:
    """Side and grade from fluid volume per side (ml) and the side's aerated lung cavity volume (ml)."""
    grades = {}
    for name in ("right", "left"):
        frac = fluid_ml[name] / max(fluid_ml[name] + lung_ml[name], 1e-6)
        grades[name] = next((g for g, t in EFFUSION_THRESHOLDS if frac >= t), None)
    present = [n for n in ("right", "left") if grades[n]]
    if not present:
        return None
    order = [g for g, _ in EFFUSION_THRESHOLDS]
    grade = min((grades[n] for n in present), key=order.index)  # the larger of the two
    side = "bilateral" if len(present) == 2 else present[0]
    return MeasuredEffusion(side, grade, round(fluid_ml["left"], 1), round(fluid_ml["right"], 1))


def grade_emphysema(pct_below_950: float) -> str | None:
    return next((g for g, t in EMPHYSEMA_THRESHOLDS if pct_below_950 >= t), None)


def analyze_volume(volume: Volume) -> Analysis:
    """Lesions, pleural effusion, emphysema and lung statistics of a chest CT volume (HU, RAS+ affine).

    Uses only HU and geometry; returns an empty, normal `Analysis` when no lungs are found.
    """
    # 1. Check input
    if not isinstance(volume, Volume):
        raise TypeError(f"`volume` must be a medgen.volume.Volume, got {type(volume).__name__}")
    if not np.isfinite(np.asarray(volume.array, dtype=np.float32)).all():
        raise ValueError("`volume` contains non-finite values; expected HU")
    # 2. Segment body, lungs (by side), cavity and pleural fluid
    seg = segment_chest(volume)
    if not (seg.lungs > 0).any():
        return Analysis()
    fluid = segment_fluid(seg)
    geometry = lung_geometry(seg, fluid)
    # 3. Lesions: accepted candidates, measured and placed in a lobe
    lesions, lesion_mask = [], np.zeros(seg.hu.shape, bool)
    for cand in find_lesions(seg):
        if not cand.accepted:
            continue
        m = measure(seg, cand)
        side = "right" if cand.side_code == SIDE_CODE["right"] else "left"
        zone, lobe = assign_lobe(geometry, side, m["center_mm"])
        lesions.append(MeasuredLesion(side=side, zone=zone, lobe=lobe, center_mm=tuple(round(c, 1) for c in m["center_mm"]),
                                      diameter_mm=round(m["diameter_mm"], 1), mean_hu=round(m["mean_hu"], 1),
                                      core_hu=round(m["core_hu"], 1), volume_ml=round(m["volume_ml"], 2)))
        lesion_mask |= lesion_box_mask(seg, cand)
    # 4. Lung statistics on aerated parenchyma (lesions excluded)
    parenchyma = (seg.lungs > 0) & ~dilate_mm(lesion_mask, seg.spacing.max() * 1.01, seg.spacing)
    values = seg.hu[parenchyma]
    pct950 = float((values < LAA_HU).mean() * 100.0) if values.size else 0.0
    percentiles = {f"p{p}": round(float(v), 1) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)} \
        if values.size else {}
    lung_ml = {name: float((seg.lungs == code).sum() * seg.voxel_ml) for name, code in SIDE_CODE.items()}
    cavity_ml = {name: float((seg.cavity == code).sum() * seg.voxel_ml) for name, code in SIDE_CODE.items()}
    fluid_ml = {name: float((fluid == code).sum() * seg.voxel_ml) for name, code in SIDE_CODE.items()}
    # 5. Effusion and emphysema grades
    effusion = grade_effusion(fluid_ml, cavity_ml)
    emphysema = grade_emphysema(pct950)
    lesions.sort(key=lambda les: -les.volume_ml)
    return Analysis(lesions=lesions, effusion=effusion, emphysema_grade=emphysema, lung_hu_percentiles=percentiles,
                    lung_pct_below_950=round(pct950, 2),
                    lung_volume_ml={**{k: round(v, 1) for k, v in lung_ml.items()},
                                    "total": round(sum(lung_ml.values()), 1)},
                    is_normal=not lesions and effusion is None and emphysema is None)
