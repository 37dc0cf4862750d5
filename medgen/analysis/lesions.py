"""Focal lung lesion detection and segmentation from HU and geometry alone.

Lesions are compact regions of raised attenuation inside the lung cavity. The hard part is the
pulmonary vessels: at 5 mm voxels their partial-volume halo looks like ground glass. Three facts
separate them (all measured on procedural phantoms, see docs/studies/analyzer_accuracy.md):

* a lesion is >= 3 voxels thick in every direction (survives a 1-voxel ball opening) and compact;
* a lesion has sharp edges, so the lung shell around it is mostly clear; a vessel continues through
  its own shell (`shell_hi`, the fraction of the surrounding lung shell above the threshold);
* a lesion has a solid core (> -300 HU) or a ground-glass plateau; vessels sit in between.

Seeds are searched twice: solid seeds (> -300 HU) first, then ground-glass seeds (> lung + 55 HU) that
are not mostly the halo of an accepted solid lesion. A thick seed is re-opened at 60 % of its inscribed
radius to cut off attached vessels. Each seed grows by whole voxel layers while most of the next layer
is above the threshold (part-solid halos); of the last, incomplete layer only halo-bright voxels are
measured. Candidates are then accepted or rejected by shape (`RULES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from medgen.analysis.segment import ChestSegmentation, bbox, dilate_mm, dist_outside, opening_mm

GGO_DELTA_HU = 55.0  # ground glass is >= 100 HU above lung; vessels' faint halo is below this
GGO_FLOOR_HU = -800.0  # never call anything below this a lesion (emphysematous lung islands)
SOLID_HU = -300.0  # solid component threshold (midway lung / soft tissue)
BONE_HU = 200.0  # above any lesion: ribs and calcium are excluded from the lesion masks
OPEN_MM = 5.0  # opening radius: a lesion core is at least this far from its edge in every direction
HALO_HU = -730.0  # an incomplete outer layer of a solid lesion keeps voxels above this (ground-glass halo)
MAX_LAYERS = 4  # at most this many voxel layers of halo around a solid core
# acceptance rule (phantom-calibrated); relaxed for large lesions, which vessels never mimic
MIN_VOLUME_ML = 2.0
RULES = (  # (seed kind or None, min volume ml, min compactness, max elongation, max shell, max outer shell)
    (None, 15.0, 0.62, 2.2, 0.20, 0.22),
    (None, 8.0, 0.80, 1.5, 0.26, 0.26),
    ("solid", MIN_VOLUME_ML, 0.72, 1.8, 0.20, 0.22),
    ("ground-glass", MIN_VOLUME_ML, 0.72, 1.8, 0.14, 0.22),
)


@dataclass
class LesionCandidate:
    """One segmented candidate in canonical voxel space.

    Args:
        mask: bool array, shape of `box`.
        box: slices into the canonical volume.
        features: shape and intensity features (see `describe`).
        side_code: 1 right, 2 left (the cavity that holds most of it).
    """

    mask: np.ndarray
    box: tuple
    features: dict
    side_code: int

    @property
    def accepted(self) -> bool:
        f = self.features
        for kind, vol, compact, elong, shell, shell2 in RULES:
            if ((kind is None or f["kind"] == kind) and f["volume_ml"] >= vol and f["compact"] >= compact
                    and f["elong"] <= elong and f["shell_hi"] <= shell and f["shell2_hi"] <= shell2):
                return True
        return False


def _grow_layers(seed, above, cavity, hu, halo_hu, spacing, max_layers):
    """Add whole voxel layers around `seed` while >= half of each new cavity layer is `above` threshold.

    The last, incomplete layer keeps only voxels brighter than `halo_hu` (halo, not vessel partial volume).
    Returns (detection region with the whole incomplete layer, measurement region).
    """
    step = spacing.max() * 1.01
    region = seed.copy()
    measured = seed.copy()
    for _ in range(max_layers):
        shell = dilate_mm(region, step, spacing) & ~region & cavity
        if not shell.any():
            break
        add = shell & above
        if add.sum() < 0.5 * shell.sum():
            measured = region | (add & (hu > halo_hu))
            region = region | add
            break
        region = region | add
        measured = region
    return ndi.binary_fill_holes(region), ndi.binary_fill_holes(measured)


def _trim(seed, above, spacing):
    """Cut thinner attachments (vessels) off a thick seed: re-open it at 60 % of its inscribed radius."""
    depth = np.where(seed, dist_outside(above, spacing), 0.0)
    radius = 0.6 * float(depth.max())
    if radius <= 1.2 * OPEN_MM:
        return seed
    core = opening_mm(seed, radius, spacing)
    lab, _ = ndi.label(core)
    deepest = lab[np.unravel_index(np.argmax(np.where(core, depth, 0.0)), seed.shape)]
    return lab == deepest if deepest else seed


def describe(seg: ChestSegmentation, region, box, cavity, above) -> dict:
    """Shape features of a candidate region (bool, shape of `box`)."""
    sp = seg.spacing
    idx = np.argwhere(region) + [b.start for b in box]
    world = seg.world(idx)
    centre = world.mean(axis=0)
    volume_ml = float(region.sum() * seg.voxel_ml)
    r_eq = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    dist = np.linalg.norm(world - centre, axis=1)
    if len(world) > 3:
        ev = np.sort(np.linalg.eigvalsh(np.cov((world - centre).T)))
        elong = float(np.sqrt(ev[2] / max(ev[0], 1e-6)))
    else:
        elong = 1.0
    step = sp.max() * 1.01
    near = dilate_mm(region, step, sp)
    shell = near & ~region & cavity
    shell2 = dilate_mm(region, 2 * step, sp) & ~near & cavity
    return {
        "centre_mm": centre, "volume_ml": volume_ml, "diameter_mm": 2.0 * r_eq,
        "compact": float((dist <= r_eq).mean()), "elong": elong,
        "shell_hi": float(above[shell].mean()) if shell.any() else 0.0,
        "shell2_hi": float(above[shell2].mean()) if shell2.any() else 0.0,
    }


def lung_reference_hu(seg: ChestSegmentation) -> dict[int, float]:
    """Median HU of each side's aerated lung (the background a lesion must rise above)."""
    return {code: float(np.median(seg.hu[seg.lungs == code])) for code in (1, 2) if (seg.lungs == code).any()}


def find_lesions(seg: ChestSegmentation) -> list[LesionCandidate]:
    """All candidates (accepted or not), solid-seeded first; see the module docstring."""
    sp, hu, cav = seg.spacing, seg.hu, seg.cavity
    ref = lung_reference_hu(seg)
    thr = np.full(hu.shape, np.inf, np.float32)
    for code, value in ref.items():
        thr[cav == code] = max(value + GGO_DELTA_HU, GGO_FLOOR_HU)
    above = (hu > thr) & (hu < BONE_HU)
    if not above.any():
        return []
    solid = above & (hu > SOLID_HU)
    step = sp.max() * 1.01
    taken = np.zeros(hu.shape, bool)
    out = []
    for kind in ("solid", "ground-glass"):
        seeds = opening_mm(solid if kind == "solid" else above, OPEN_MM, sp)
        lab, n = ndi.label(seeds)
        margin = int(np.ceil((MAX_LAYERS + 3) * step / sp.min()))
        for box_i, sl in enumerate(ndi.find_objects(lab), start=1):
            if sl is None:
                continue
            box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, hu.shape[d])) for d, s in enumerate(sl))
            seed = lab[box] == box_i
            if kind == "ground-glass" and (seed & taken[box]).sum() > 0.3 * seed.sum():
                continue  # mostly the halo of an accepted solid lesion, already measured
            cb, ab, hb = cav[box] > 0, above[box], hu[box]
            seed = _trim(seed, ab, sp)
            side = int(np.bincount(cav[box][seed], minlength=3)[1:].argmax() + 1)
            if kind == "solid":
                core = dilate_mm(seed, step, sp) & solid[box]
                layers = MAX_LAYERS
            else:
                core, layers = seed, 1
            halo_hu = (ref.get(side, -850.0) + max(float(np.median(hb[seed])), -690.0)) / 2.0 if kind == "ground-glass" \
                else HALO_HU
            region, measured = _grow_layers(core, ab, cb, hb, halo_hu, sp, layers)
            feats = describe(seg, region, box, cb, ab)
            feats["kind"] = kind
            cand = LesionCandidate(measured, box, feats, side)
            if cand.accepted:
                taken[box] |= dilate_mm(region, step, sp)
            out.append(cand)
    return out


def lesion_box_mask(seg: ChestSegmentation, cand: LesionCandidate) -> np.ndarray:
    """Full-volume bool mask of a candidate (canonical voxel order)."""
    full = np.zeros(seg.hu.shape, bool)
    full[cand.box] = cand.mask
    return full


def measure(seg: ChestSegmentation, cand: LesionCandidate) -> dict:
    """Centre (mm), equivalent diameter (mm), volume (ml), mean HU and core HU of a candidate's mask.

    The core is the voxels deeper than half the equivalent radius (at least the deepest voxel), the
    "eroded interior" that ignores the boundary partial volume.
    """
    sp = seg.spacing
    mask = cand.mask
    hu = seg.hu[cand.box][mask]
    idx = np.argwhere(mask) + [b.start for b in cand.box]
    volume_ml = float(mask.sum() * seg.voxel_ml)
    diameter = 2.0 * (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    depth = dist_outside(mask, sp)[mask]
    deep = depth >= min(0.5 * diameter / 2.0 + 0.5 * sp.mean(), depth.max())
    return {"center_mm": tuple(float(c) for c in seg.world(idx).mean(axis=0)), "diameter_mm": diameter,
            "volume_ml": volume_ml, "mean_hu": float(hu.mean()), "core_hu": float(hu[deep].mean())}


__all__ = ["LesionCandidate", "find_lesions", "measure", "lesion_box_mask", "lung_reference_hu", "bbox"]
