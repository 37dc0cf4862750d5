"""Body, lung and thoracic-cavity segmentation of a CT volume from HU and geometry alone.

Nothing here reads label maps or knows how the volume was made: thresholds are physical (air,
lung, soft tissue) and every size is in millimetres, so the same code runs at 5 mm and 1.25 mm.

Arrays are handled in RAS+ voxel order (`canonical`): axis 0 runs toward the patient's right,
axis 1 anterior, axis 2 superior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from medgen.volume import Volume

BODY_HU = -500.0  # air/body boundary
AIR_HU = -400.0  # aerated lung and airways are below this
CORE_MM = 17.5  # lung cores are farther than this from non-air: deeper than any trachea or bronchus
CLOSE_MM = 0.0  # closing radius that turns the aerated lung into the cavity (0: holes only; a closing drags mediastinal tissue in)
MIN_LUNG_ML = 50.0  # smaller air pockets (gastric gas, bowel) are not lungs
SIDE_CODE = {"right": 1, "left": 2}


@dataclass
class ChestSegmentation:
    """Segmentation in canonical (RAS) voxel order.

    Args:
        hu: (X, Y, Z) float32 HU.
        affine: (4, 4) voxel -> RAS+ world of `hu`.
        body: (X, Y, Z) bool, body with internal air filled.
        lungs: (X, Y, Z) uint8, aerated lung by side (`SIDE_CODE`: 1 right, 2 left), airways removed.
        cavity: (X, Y, Z) uint8, lungs with holes and small notches filled (what a lesion can occupy).
        airway: (X, Y, Z) bool, trachea and main bronchi tracked from the top of the body.
    """

    hu: np.ndarray
    affine: np.ndarray
    body: np.ndarray
    lungs: np.ndarray
    cavity: np.ndarray
    airway: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing) / 1000.0)

    def axes(self):
        """Broadcastable world coordinates x (X,1,1), y (1,Y,1), z (1,1,Z) in mm (axis-aligned approximation)."""
        out = []
        for d in range(3):
            n = self.hu.shape[d]
            out.append((self.affine[d, d] * np.arange(n) + self.affine[d, 3]).reshape([-1 if k == d else 1
                                                                                        for k in range(3)]))
        return tuple(out)

    def world(self, index) -> np.ndarray:
        index = np.asarray(index, dtype=float)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]


def canonical(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """HU array (float32) and affine reoriented to the closest RAS+ voxel order (no resampling)."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(volume.affine)
    array = apply_orientation(np.asarray(volume.array, dtype=np.float32), ornt)
    affine = volume.affine @ inv_ornt_aff(ornt, volume.array.shape)
    return np.ascontiguousarray(array), affine


def dist_outside(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from each voxel of `mask` to the nearest voxel outside it (beyond the volume counts as outside)."""
    return ndi.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]


def dist_inside(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from each voxel to the nearest voxel of `mask` (inf-like where `mask` is empty)."""
    if not mask.any():
        return np.full(mask.shape, np.inf)
    return ndi.distance_transform_edt(np.pad(~mask, 1, constant_values=True), sampling=spacing)[1:-1, 1:-1, 1:-1]


def ball(radius: float, spacing) -> np.ndarray | None:
    """Voxel footprint of a ball of `radius` mm (None when it would be large: use distance transforms)."""
    spacing = np.asarray(spacing, dtype=float)
    half = np.floor(radius / spacing + 1e-9).astype(int)
    if half.max() > 3:
        return None
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)], indexing="ij")
    return sum(g**2 for g in grids) <= radius**2 + 1e-9


def dilate_mm(mask: np.ndarray, radius: float, spacing) -> np.ndarray:
    """Binary dilation with a ball of `radius` mm (any voxel size): voxels within `radius` of `mask`."""
    fp = ball(radius, spacing)
    if fp is not None:
        return ndi.binary_dilation(mask, structure=fp)
    return dist_inside(mask, spacing) <= radius


def erode_mm(mask: np.ndarray, radius: float, spacing) -> np.ndarray:
    """Binary erosion with a ball of `radius` mm; beyond the volume counts as outside the mask."""
    fp = ball(radius, spacing)
    if fp is not None:
        return ndi.binary_erosion(mask, structure=fp, border_value=0)
    return dist_outside(mask, spacing) > radius


def closing_mm(mask: np.ndarray, radius: float, spacing) -> np.ndarray:
    """Binary closing with a ball of `radius` mm."""
    if not mask.any():
        return mask.copy()
    return erode_mm(dilate_mm(mask, radius, spacing), radius, spacing)


def opening_mm(mask: np.ndarray, radius: float, spacing) -> np.ndarray:
    """Binary opening with a ball of `radius` mm."""
    eroded = erode_mm(mask, radius, spacing)
    if not eroded.any():
        return eroded
    return dilate_mm(eroded, radius, spacing) & mask


def fill_holes_2d(mask: np.ndarray, axes=(2,)) -> np.ndarray:
    """Fill holes slice by slice along each axis in `axes` (one vectorised call per axis)."""
    out = mask.copy()
    for axis in axes:
        structure = np.zeros((3, 3, 3), bool)
        sl = [slice(None)] * 3
        sl[axis] = 1
        structure[tuple(sl)] = ndi.generate_binary_structure(2, 1)
        out |= ndi.binary_fill_holes(mask, structure=structure)
    return out


def bbox(mask: np.ndarray, margin: int = 0):
    """Slices of the bounding box of `mask` grown by `margin` voxels (clipped); None if `mask` is empty."""
    if not mask.any():
        return None
    out = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        out.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + margin + 1, mask.shape[axis])))
    return tuple(out)


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def segment_body(hu: np.ndarray) -> np.ndarray:
    """Largest connected region above -500 HU with internal air (lungs, airways, bowel gas) filled per slice."""
    body = largest_component(hu > BODY_HU)
    return fill_holes_2d(body, axes=(2,)) | ndi.binary_fill_holes(body)


def track_airway(air: np.ndarray, spacing, max_area_mm2: float = 1200.0) -> np.ndarray:
    """Trachea and main bronchi: small air regions followed slice by slice from the top of the body down.

    In the neck the only air inside the body is the trachea; going down, each slice keeps the small 2D
    air components that touch the airway of the slice above. Tracking stops at a component larger than
    `max_area_mm2` (where a bronchus enters the lung) or when nothing small continues.
    """
    out = np.zeros_like(air)
    px_area = float(spacing[0] * spacing[1])
    grow = ndi.generate_binary_structure(2, 2)
    prev = None
    z_top = np.flatnonzero(air.any(axis=(0, 1)))
    if z_top.size == 0:
        return out
    for k in range(int(z_top[-1]), -1, -1):
        lab, n = ndi.label(air[:, :, k])
        if n == 0:
            if prev is not None:
                break
            continue
        areas = np.bincount(lab.ravel())[1:] * px_area
        if prev is None:
            # the top air slice of the body: only small components can be the trachea
            keep = [i + 1 for i, a in enumerate(areas) if a <= max_area_mm2]
            if not keep or len(keep) != n:
                break  # the top slice already cuts through lung (no neck): leave airways in place
        else:
            touching = np.unique(lab[ndi.binary_dilation(prev, grow) & (lab > 0)])
            keep = [int(i) for i in touching if areas[int(i) - 1] <= max_area_mm2]
            if not keep:
                break
        cur = np.isin(lab, keep)
        out[:, :, k] = cur
        prev = cur
    return out


def segment_lungs(hu: np.ndarray, body: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aerated lungs labelled by side (1 right, 2 left) and the tracked airway mask.

    Lungs are the air inside the body minus the tracked airway; each remaining air voxel joins the nearest
    deep "core" (air farther than `CORE_MM` from anything else), which separates the two lungs from each
    other and drops airways and small gas pockets. Side comes from the world x of each core (RAS+: +x right).
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    voxel_ml = float(np.prod(spacing) / 1000.0)
    air = (hu < AIR_HU) & body
    airway = track_airway(air, spacing)
    air &= ~airway
    lungs = np.zeros(hu.shape, np.uint8)
    box = bbox(air, 1)
    if box is None:
        return lungs, airway
    # work inside the bounding box of the air (x coordinates shifted accordingly)
    sub_lungs = lungs[box]
    air, body = air[box], body[box]
    x0 = box[0].start
    core_lab, n = ndi.label(dist_outside(air, spacing) > min(CORE_MM, 3.0 * spacing.max()))
    if n == 0:
        return lungs, airway
    # lungs: the (at most two) largest air components that hold a core and are big enough, each
    # represented by its largest core; one component holding both lungs gives its two largest cores
    air_lab, _ = ndi.label(air)
    air_sizes = np.bincount(air_lab.ravel()) * voxel_ml
    core_sizes = np.bincount(core_lab.ravel())
    core_comp = np.zeros(n + 1, int)
    for i, sl in enumerate(ndi.find_objects(core_lab), start=1):
        core_comp[i] = int(np.bincount(air_lab[sl][core_lab[sl] == i]).argmax())
    best = {}
    for i in np.argsort(core_sizes[1:])[::-1] + 1:
        comp = core_comp[i]
        if air_sizes[comp] >= MIN_LUNG_ML:
            best.setdefault(comp, []).append(int(i))
    comps = sorted(best, key=lambda c: air_sizes[c], reverse=True)[:2]
    if not comps:
        return lungs, airway
    cores = [best[c][0] for c in comps]
    if len(cores) == 1 and len(best[comps[0]]) > 1 and core_sizes[best[comps[0]][1]] >= 0.2 * core_sizes[cores[0]]:
        cores.append(best[comps[0]][1])
    x = affine[0, 0] * np.arange(x0, x0 + air.shape[0]) + affine[0, 3]
    if len(cores) == 1:
        # one lung only (or both fused into one core): split its air at the body's midline
        comp = np.bincount(air_lab[core_lab == cores[0]]).argmax()
        xb = x[np.nonzero(body)[0]].mean()
        right = (x > xb)[:, None, None]
        sub_lungs[(air_lab == comp) & right] = SIDE_CODE["right"]
        sub_lungs[(air_lab == comp) & ~right] = SIDE_CODE["left"]
        return lungs, airway
    centres = {c: float(x[np.nonzero(core_lab == c)[0]].mean()) for c in cores}
    code_of = {c: SIDE_CODE["right"] if c == max(cores, key=centres.get) else SIDE_CODE["left"] for c in cores}
    comp_of = {c: int(np.bincount(air_lab[core_lab == c]).argmax()) for c in cores}
    if comp_of[cores[0]] != comp_of[cores[1]]:
        # two separate air components: each lung is its whole component
        for c in cores:
            sub_lungs[air_lab == comp_of[c]] = code_of[c]
    else:
        # lungs touch (or share bronchi): each air voxel joins the nearest core
        core_mask = np.isin(core_lab, cores)
        nearest = ndi.distance_transform_edt(~core_mask, sampling=spacing, return_distances=False,
                                             return_indices=True)
        owner = core_lab[tuple(nearest)]
        shared = air_lab == comp_of[cores[0]]
        for c in cores:
            sub_lungs[shared & (owner == c)] = code_of[c]
    return lungs, airway


def segment_cavity(lungs: np.ndarray, body: np.ndarray, spacing) -> np.ndarray:
    """Per side: aerated lung closed by `CLOSE_MM`, 3D holes filled, then coronal 2D holes filled."""
    cavity = np.zeros_like(lungs)
    margin = int(np.ceil(CLOSE_MM / min(spacing))) + 1
    for code in SIDE_CODE.values():
        box = bbox(lungs == code, margin)
        if box is None:
            continue
        m = lungs[box] == code
        if CLOSE_MM > 0:
            m = closing_mm(m, CLOSE_MM, spacing) | m
        m = ndi.binary_fill_holes(m)
        # coronal fill catches lesions against the chest wall; axial fill would swallow the diaphragm
        # domes (ring-shaped lung bases) and sagittal fill the hila, so neither is used
        m = fill_holes_2d(m, axes=(1,))
        sub = cavity[box]
        sub[m & body[box] & (sub == 0)] = code
    # the other lung's aerated voxels never belong to this cavity
    cavity[(lungs > 0)] = lungs[lungs > 0]
    return cavity


def segment_chest(volume: Volume) -> ChestSegmentation:
    """Body, lungs (by side), cavity and airway of a CT volume (see `ChestSegmentation`)."""
    hu, affine = canonical(volume)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    body = segment_body(hu)
    lungs, airway = segment_lungs(hu, body, affine)
    cavity = segment_cavity(lungs, body, spacing)
    return ChestSegmentation(hu, affine, body, lungs, cavity, airway)


# Fissure geometry as fractions of a lung's height (z0 = lowest point of the lung territory, including
# any pleural fluid, h = its height) and of the chest's antero-posterior lung extent (y_post..y_ant):
# the oblique fissure runs from 0.61 h posteriorly down to 0.14 h at 0.59 of the way forward, the
# horizontal fissure (right) lies at 0.6 h. These are the centres of the anatomical ranges the phantom
# draws from; they are applied to geometry measured on the volume, never to a label map.
OBLIQUE_POST, OBLIQUE_ANT, OBLIQUE_ANT_Y, HORIZONTAL = 0.61, 0.14, 0.59, 0.60


def lung_geometry(seg: ChestSegmentation, fluid: np.ndarray | None = None) -> dict:
    """Extents (world mm) used for zone and lobe assignment, per side name.

    Returns ``{"right": {"z_lo", "z_hi", "z0", "z1"}, "left": {...}, "y_post", "y_ant"}``: z_lo..z_hi is
    the aerated lung's height, z0..z1 the lung territory's (cavity plus pleural fluid of that side).
    """
    x, y, z = seg.axes()
    out = {}
    territory_all = seg.cavity > 0
    for name, code in SIDE_CODE.items():
        aerated = seg.lungs == code
        territory = seg.cavity == code
        if fluid is not None:
            territory = territory | (fluid == code)
        territory_all |= territory
        if not aerated.any():
            continue
        za = z.ravel()[np.flatnonzero(aerated.any(axis=(0, 1)))]
        zt = z.ravel()[np.flatnonzero(territory.any(axis=(0, 1)))]
        out[name] = {"z_lo": float(za.min()), "z_hi": float(za.max()), "z0": float(zt.min()), "z1": float(zt.max())}
    ys = y.ravel()[np.flatnonzero(territory_all.any(axis=(0, 2)))]
    out["y_post"], out["y_ant"] = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    return out


def assign_lobe(geometry: dict, side: str, center_mm) -> tuple[str, str]:
    """(zone, lobe) of a point in lung `side` from the measured lung geometry (see `lung_geometry`).

    Upper vs lower: above or below the middle of the aerated lung's height. Right middle lobe: the
    anterior wedge above the oblique fissure and below the horizontal fissure.
    """
    if geometry.get(side) is None:
        return "middle", None
    _, y, z = (float(c) for c in center_mm)
    upper, middle = (bool(v) for v in lobe_partition(geometry, side, np.float64(y), np.float64(z)))
    if side == "left":
        return ("upper", "left_upper") if upper else ("lower", "left_lower")
    if middle:
        return "middle", "right_middle"
    return ("upper", "right_upper") if upper else ("lower", "right_lower")


def lobe_partition(geometry: dict, side: str, y, z):
    """(upper, middle) boolean arrays for points (y, z) (world mm, broadcastable) of lung `side` (which must
    be in `geometry`): the rules of `assign_lobe`, on arrays; `middle` is only ever true on the right."""
    g = geometry[side]
    upper = z >= (g["z_lo"] + g["z_hi"]) / 2.0
    if side == "left":
        return upper, np.zeros(np.broadcast(y, z).shape, bool)
    h = max(g["z1"] - g["z0"], 1.0)
    span = max(OBLIQUE_ANT_Y * (geometry["y_ant"] - geometry["y_post"]), 1.0)
    z_oblique = g["z0"] + h * (OBLIQUE_POST + (OBLIQUE_ANT - OBLIQUE_POST) * (y - geometry["y_post"]) / span)
    z_horizontal = g["z0"] + HORIZONTAL * h
    middle = np.where(upper, (z_oblique < z) & (z < z_horizontal), z > z_oblique)
    return upper, middle
