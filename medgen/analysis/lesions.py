"""Focal lung lesion detection and segmentation from HU and geometry alone.

Lesions are compact regions of raised attenuation inside the lung cavity. The hard part is the
pulmonary vessels: at 5 mm voxels their partial-volume halo looks like ground glass. Four facts
separate them (all measured on procedural phantoms, see docs/studies/analyzer_accuracy.md):

* a lesion is >= 2 voxels (10 mm) thick in every direction and compact;
* a lesion has sharp edges, so the lung shell around it is mostly clear; a vessel continues through
  its own shell (`shell_hi`, the fraction of the surrounding lung shell above the threshold);
* a lesion is a plateau: its voxels sit within noise of one HU level (two for a part-solid lesion, its
  solid core and its ground-glass halo), while a cluster of vessels spreads over every HU between lung
  and blood (`plateau`, the fraction of voxels within `PLATEAU_HU` of their level);
* a lesion has a solid core (> -300 HU) or a ground-glass plateau; vessels sit in between.

Seeds are searched in three passes: solid seeds (> -300 HU), plateau seeds (10 mm cubes above the
ground-glass threshold whose HU spread is at most `FLAT_HU`: ground glass among vessels) and ground-glass
seeds (> lung + 55 HU); a seed that mostly overlaps an accepted lesion is skipped. Solid and ground-glass
seeds are the parts of the thresholded lung that hold a 5 mm ball or a 10 mm cube; a thick seed is
re-opened at 60 % of its inscribed radius to cut off attached vessels. Each seed grows by whole voxel
layers while most of the next layer is above the threshold (part-solid halos); of the last, incomplete
layer only halo-bright voxels are measured. Candidates are accepted or rejected by shape and plateau
(`RULES`).

Lesions against the chest wall or the diaphragm are not holes of the aerated lung, so the search space
is the lung cavity plus the tissue that a closing of each lung with a `WALL_CLOSE_MM` ball adds lateral
of that lung's medial edge. A candidate that lies mostly there must touch the wall laterally or from
below and lie `WALL_MIDLINE_MM` from the body midline: against the mediastinum and the hila a lesion
cannot be told from vessels and the heart at 5 mm, and only lesions that reach into the aerated lung are
found there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from medgen.analysis.segment import ChestSegmentation, bbox, closing_mm, dilate_mm, dist_outside, opening_mm

GGO_DELTA_HU = 55.0  # ground glass is >= 100 HU above lung; vessels' faint halo is below this
GGO_FLOOR_HU = -800.0  # never call anything below this a lesion (emphysematous lung islands)
SOLID_HU = -300.0  # solid component threshold (midway lung / soft tissue)
BONE_HU = 200.0  # above any lesion: ribs and calcium are excluded from the lesion masks
OPEN_MM = 5.0  # opening radius: a lesion core is at least this far from its edge in every direction ...
SEED_CUBE_MM = 10.0  # ... or holds a cube of this side (at least 2 voxels a side): 15 mm lesions at 5 mm voxels
HALO_HU = -730.0  # an incomplete outer layer of a solid lesion keeps voxels above this (ground-glass halo)
MAX_LAYERS = 4  # at most this many voxel layers of halo around a solid core
# plateau: a lesion's voxels lie within PLATEAU_HU of the median of their level (solid above SOLID_HU, ground
# glass below), 3-6 x the phantom's image noise (10-18 HU); plateau seeds are seed cubes spanning <= FLAT_HU
PLATEAU_HU = 60.0
FLAT_HU = 80.0
PASSES = ("solid", "plateau", "ground-glass")  # seed passes, in order; plateau seeds grow like ground glass
# wall-attached lesions (see the module docstring)
WALL_CLOSE_MM = 25.0  # radius of the closing that adds the tissue bulging into each lung (lesions up to 50 mm)
WALL_FRACTION = 0.25  # a candidate with more than this fraction of its voxels outside the aerated cavity is on the wall
WALL_MIDLINE_MM = 40.0  # ... and must lie this far from the body midline (mediastinum and hila)
WALL_DIRECTION = 0.3  # ... and touch the wall laterally or from below: that component of the unit contact direction
# acceptance rules, calibrated on the phantoms of seed range analysis.calibration (docs/studies/validate_analyzer.py
# --recall-only --ranges analysis.calibration); a candidate is a lesion when it meets every bound of one row. The
# shape-only rows of earlier versions now also ask for a plateau: a seed spread over many HU is a vessel cluster
MIN_VOLUME_ML = 1.5
RULES = (  # (seed kind or None, min volume ml, min compactness, max elongation, max shell, max outer shell,
    #          min plateau of the seed, min plateau of the measured region, only inside the aerated cavity)
    (None, 15.0, 0.62, 2.2, 0.20, 0.22, 0.60, 0.0, False),  # large and sharp-edged (vessels never mimic these)
    (None, 8.0, 0.80, 1.5, 0.26, 0.26, 0.60, 0.0, False),
    ("solid", 2.0, 0.72, 1.8, 0.20, 0.22, 0.75, 0.0, False),
    ("ground-glass", 2.0, 0.72, 1.8, 0.14, 0.22, 0.75, 0.0, False),
    (None, 3.0, 0.70, 2.0, 0.30, 0.30, 0.90, 0.80, False),  # a plateau with vessels touching it
    (None, 2.0, 0.70, 1.8, 0.25, 0.30, 0.90, 0.80, False),
    # a round, flat core among vessels: only inside the lung (against the chest wall, the partial volume of
    # phantom v2's ribs and muscles makes such cores on normal subjects)
    (None, 3.0, 0.80, 1.5, 0.45, 0.35, 0.95, 0.60, True),
    (None, MIN_VOLUME_ML, 0.75, 1.9, 0.10, 0.10, 0.95, 0.90, False),  # a small, isolated, flat lesion (15-17 mm)
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
    def wall_ok(self) -> bool:
        """Inside the aerated cavity, or against the costal / diaphragmatic wall (not the mediastinum)."""
        f = self.features
        if f["wall_fraction"] <= WALL_FRACTION:
            return True
        return f["midline_mm"] >= WALL_MIDLINE_MM and max(f["contact_lateral"], f["contact_down"]) >= WALL_DIRECTION

    @property
    def accepted(self) -> bool:
        f = self.features
        if not self.wall_ok:
            return False
        inside = f["wall_fraction"] <= WALL_FRACTION
        for kind, vol, compact, elong, shell, shell2, plat_seed, plat, inside_only in RULES:
            if ((kind is None or f["kind"] == kind) and (inside or not inside_only) and f["volume_ml"] >= vol
                    and f["compact"] >= compact
                    and f["elong"] <= elong and f["shell_hi"] <= shell and f["shell2_hi"] <= shell2
                    and f["plateau_seed"] >= plat_seed and f["plateau"] >= plat):
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


def _cube(spacing) -> tuple[int, int, int]:
    """Voxels per axis of a `SEED_CUBE_MM` cube (at least 2)."""
    return tuple(max(2, int(round(SEED_CUBE_MM / float(s)))) for s in spacing)


def _cube_origin(size) -> list[int]:
    # an even window of `ndimage` filters covers [i - n/2, i + n/2 - 1]; origin -1 shifts it to [i - n/2 + 1, i + n/2]
    return [-1 if n % 2 == 0 else 0 for n in size]


def cube_opening(mask: np.ndarray, spacing) -> np.ndarray:
    """Voxels of `mask` that lie in a `SEED_CUBE_MM` cube of `mask` voxels (opening with a cube)."""
    return ndi.binary_opening(mask, structure=np.ones(_cube(spacing), bool))


def flat_cubes(hu: np.ndarray, mask: np.ndarray, spacing) -> np.ndarray:
    """Voxels of the `SEED_CUBE_MM` cubes that lie wholly in `mask` and span at most `FLAT_HU` (plateau seeds)."""
    size = _cube(spacing)
    inside = ndi.minimum_filter(mask.astype(np.uint8), size=size, mode="constant", cval=0) > 0
    span = ndi.maximum_filter(hu, size=size, mode="nearest") - ndi.minimum_filter(hu, size=size, mode="nearest")
    anchor = inside & (span <= FLAT_HU)
    # paint each anchored window back onto its voxels (the mirrored window of the same size)
    return ndi.maximum_filter(anchor.astype(np.uint8), size=size, origin=_cube_origin(size)) > 0


def plateau_fraction(values: np.ndarray) -> float:
    """Fraction of `values` (HU) within `PLATEAU_HU` of the median of their level (solid above `SOLID_HU`, else
    ground glass): near 1 for a lesion (one or two flat levels), about half for a cluster of vessels."""
    if values.size == 0:
        return 0.0
    hi = values > SOLID_HU
    near = sum(int((np.abs(v - np.median(v)) <= PLATEAU_HU).sum()) for v in (values[hi], values[~hi]) if v.size)
    return near / values.size


def search_space(seg: ChestSegmentation) -> np.ndarray:
    """Where lesions are searched (uint8 side codes): the lung cavity plus the tissue bulging into each lung.

    The bulges are what a closing of each side's cavity with a `WALL_CLOSE_MM` ball adds inside the body and
    outside both cavities, kept lateral of that lung's most medial voxel in the same (y, z) row (rows without
    lung borrow the nearest row's), so the mediastinum and the hila stay out.
    """
    sp, cav = seg.spacing, seg.cavity
    out = cav.copy()
    xi = np.arange(cav.shape[0])[:, None, None]
    for code in (1, 2):
        side = cav == code
        lung = seg.lungs == code
        box = bbox(side, int(np.ceil(WALL_CLOSE_MM / sp.min())) + 1)
        if box is None or not lung.any():
            continue
        add = np.zeros(cav.shape, bool)
        add[box] = closing_mm(side[box], WALL_CLOSE_MM, sp) & (cav[box] == 0) & seg.body[box]
        # medial edge per (y, z) row: right lung (code 1) toward lower x index in RAS order, left toward higher
        right = (code == 1) == (seg.affine[0, 0] > 0)
        edge = np.where(lung, xi, cav.shape[0] if right else -1)
        edge = edge.min(axis=0) if right else edge.max(axis=0)
        rows = lung.any(axis=0)
        edge = edge[tuple(ndi.distance_transform_edt(~rows, return_distances=False, return_indices=True))]
        add &= (xi >= edge[None]) if right else (xi <= edge[None])
        out[add] = code
    return out


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


def wall_contact(seg: ChestSegmentation, measured, box, cavity, space, side: int, midline_x: float) -> dict:
    """Where a candidate meets the wall: the fraction of it outside the aerated cavity, the lateral and downward
    components of the unit vector from its centre to its voxels that touch tissue outside the search space,
    and its distance (mm) from the body midline."""
    offset = [b.start for b in box]
    centre = seg.world(np.argwhere(measured) + offset).mean(axis=0)
    out = {"wall_fraction": float((measured & ~cavity).sum() / max(int(measured.sum()), 1)),
           "midline_mm": float(abs(centre[0] - midline_x)), "contact_lateral": 0.0, "contact_down": 0.0}
    touch = measured & ndi.binary_dilation(~space & seg.body[box])
    if touch.any():
        v = seg.world(np.argwhere(touch) + offset).mean(axis=0) - centre
        v = v / max(float(np.linalg.norm(v)), 1e-6)
        out["contact_lateral"] = float(v[0] if side == 1 else -v[0])  # RAS: +x is the patient's right
        out["contact_down"] = float(-v[2])
    return out


def lung_reference_hu(seg: ChestSegmentation) -> dict[int, float]:
    """Median HU of each side's aerated lung (the background a lesion must rise above)."""
    return {code: float(np.median(seg.hu[seg.lungs == code])) for code in (1, 2) if (seg.lungs == code).any()}


def find_lesions(seg: ChestSegmentation) -> list[LesionCandidate]:
    """All candidates (accepted or not), solid-seeded first; see the module docstring."""
    sp, hu, cav = seg.spacing, seg.hu, seg.cavity
    ref = lung_reference_hu(seg)
    space = search_space(seg)
    thr = np.full(hu.shape, np.inf, np.float32)
    for code, value in ref.items():
        thr[space == code] = max(value + GGO_DELTA_HU, GGO_FLOOR_HU)
    above = (hu > thr) & (hu < BONE_HU)
    if not above.any():
        return []
    solid = above & (hu > SOLID_HU)
    step = sp.max() * 1.01
    midline_x = float(np.broadcast_to(seg.axes()[0], hu.shape)[seg.body].mean())
    taken = np.zeros(hu.shape, bool)
    out = []
    for name in PASSES:
        base = solid if name == "solid" else above
        if name == "plateau":
            seeds = flat_cubes(hu, base, sp)
        else:
            seeds = opening_mm(base, OPEN_MM, sp) | cube_opening(base, sp)
        kind = "solid" if name == "solid" else "ground-glass"
        lab, n = ndi.label(seeds)
        margin = int(np.ceil((MAX_LAYERS + 3) * step / sp.min()))
        for box_i, sl in enumerate(ndi.find_objects(lab), start=1):
            if sl is None:
                continue
            box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, hu.shape[d])) for d, s in enumerate(sl))
            seed = lab[box] == box_i
            if (seed & taken[box]).sum() > 0.3 * seed.sum():
                continue  # mostly an accepted lesion (or its halo), already measured
            sb, cb, ab, hb = space[box] > 0, cav[box] > 0, above[box], hu[box]
            if name != "plateau":
                seed = _trim(seed, ab, sp)
                if (seed & taken[box]).sum() > 0.3 * seed.sum():
                    continue  # what is left after cutting off the vessels is an accepted lesion
            side = int(np.bincount(space[box][seed], minlength=3)[1:].argmax() + 1)
            if kind == "solid":
                core = dilate_mm(seed, step, sp) & solid[box]
                layers = MAX_LAYERS
            else:
                core, layers = seed, 1
            halo_hu = (ref.get(side, -850.0) + max(float(np.median(hb[seed])), -690.0)) / 2.0 if kind == "ground-glass" \
                else HALO_HU
            region, measured = _grow_layers(core, ab, sb, hb, halo_hu, sp, layers)
            feats = describe(seg, region, box, cb, ab)
            feats.update(kind=kind, seed_pass=name, plateau_seed=plateau_fraction(hb[seed]),
                         plateau=plateau_fraction(hb[measured]),
                         **wall_contact(seg, measured, box, cb, sb, side, midline_x))
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


__all__ = ["LesionCandidate", "find_lesions", "measure", "lesion_box_mask", "lung_reference_hu", "bbox",
           "search_space", "plateau_fraction", "flat_cubes"]
