"""The anatomy of a CT being edited, as a layout label map on the work grid.

From HU alone (the finding analyzer's segmentation, `medgen.analysis.segment`): body wall, bone, lungs split
into lobes by the analyzer's fissure geometry, airway, mediastinum, pleural fluid. A volume medgen made
brings its own label map instead, which is exact (and the only way to name a lesion to remove).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError

from medgen.analysis.segment import SIDE_CODE, lobe_partition, lung_geometry, segment_chest
from medgen.findings import LABELS, LOBE_LABELS
from medgen.layout.labels import EMPHYSEMA_LABEL
from medgen.phantom.anatomy import Grid
from medgen.volume import Volume

BONE_HU = 200.0  # cancellous bone of the phantom is ~290 HU, soft tissue below 80
MIN_AERATED_ML = 200.0  # less aerated lung than this in the field of view: not a chest CT we can edit


class EditInputError(ValueError):
    """A CT that cannot be edited as asked (not a chest, a lobe the segmentation does not find, ...)."""


@dataclass
class EditAnatomy:
    """Layout labels (`medgen.layout.labels` values) of the CT on the work grid, and where they came from.

    Args:
        labels: uint8 (X, Y, Z) on `grid`.
        grid: the work grid (RAS+, axis-aligned).
        source: "segmentation" or "labels" (the volume's own label map).
    """

    labels: np.ndarray
    grid: Grid
    source: str

    def lobe_volume_ml(self, lobe: str) -> float:
        return float((self.labels == LOBE_LABELS[lobe]).sum() * np.prod(self.grid.spacing) / 1000.0)


def segment_anatomy(hu: np.ndarray, grid: Grid) -> EditAnatomy:
    """Layout labels of a CT from its HU (on an RAS+ axis-aligned `grid`).

    Raises:
        EditInputError: too little aerated lung in the field of view to be a chest CT.
    """
    from medgen.analysis.findings import segment_fluid

    affine = np.diag([*grid.spacing, 1.0])
    affine[:3, 3] = grid.origin
    seg = segment_chest(Volume(hu.astype(np.float32), affine))
    aerated_ml = float((seg.lungs > 0).sum() * seg.voxel_ml)
    if aerated_ml < MIN_AERATED_ML:
        raise EditInputError(f"this does not look like a chest CT: {aerated_ml:.0f} ml of aerated lung found in "
                             f"the field of view (at least {MIN_AERATED_ML:.0f} ml expected)")
    fluid = segment_fluid(seg)
    labels = np.zeros(hu.shape, np.uint8)
    labels[seg.body] = LABELS["body"]
    labels[seg.body & (hu >= BONE_HU)] = LABELS["bone"]
    labels[_between_lungs(seg.cavity > 0) & seg.body & (hu < BONE_HU)] = LABELS["mediastinum"]
    lobes = lobe_map(seg, lung_geometry(seg, fluid))
    labels[lobes > 0] = lobes[lobes > 0]
    labels[fluid > 0] = LABELS["effusion"]
    labels[seg.airway] = LABELS["airway"]
    return EditAnatomy(labels, grid, "segmentation")


def lobe_map(seg, geometry: dict) -> np.ndarray:
    """uint8 lobe label (`LOBE_LABELS`) of every voxel of the lung cavity, 0 elsewhere."""
    _, y, z = seg.axes()
    out = np.zeros(seg.cavity.shape, np.uint8)
    for side, code in SIDE_CODE.items():
        inside = seg.cavity == code
        if side not in geometry or not inside.any():
            continue
        yy, zz = (np.broadcast_to(a, inside.shape)[inside] for a in (y, z))
        upper, middle = lobe_partition(geometry, side, yy, zz)
        lobe = np.where(upper, LOBE_LABELS[f"{side}_upper"], LOBE_LABELS[f"{side}_lower"])
        if side == "right":
            lobe = np.where(middle, LOBE_LABELS["right_middle"], lobe)
        out[inside] = lobe
    return out


def _between_lungs(cavity: np.ndarray) -> np.ndarray:
    """Per axial slice, the convex hull of the lung cavity: what lies inside it and is not lung is mediastinum."""
    out = np.zeros(cavity.shape, bool)
    ii, jj = np.meshgrid(np.arange(cavity.shape[0]), np.arange(cavity.shape[1]), indexing="ij")
    grid_points = np.column_stack([ii.ravel(), jj.ravel()])
    for k in np.flatnonzero(cavity.any(axis=(0, 1))):
        points = np.argwhere(cavity[:, :, k])
        if len(points) < 4:
            continue
        try:
            hull = Delaunay(points[ConvexHull(points).vertices])
        except QhullError:  # collinear points: no area
            continue
        out[:, :, k] = (hull.find_simplex(grid_points) >= 0).reshape(cavity.shape[:2])
    return out & ~cavity


def labels_anatomy(labels: np.ndarray, grid: Grid) -> EditAnatomy:
    """A volume's own layout label map (medgen's label values) as the anatomy; emphysematous lung stays."""
    labels = np.asarray(labels).astype(np.uint8)
    lungs = np.isin(labels, [*LOBE_LABELS.values(), EMPHYSEMA_LABEL])
    if float(lungs.sum() * np.prod(grid.spacing) / 1000.0) < MIN_AERATED_ML:
        raise EditInputError("the label map holds too little lung to be a chest")
    return EditAnatomy(labels, grid, "labels")
