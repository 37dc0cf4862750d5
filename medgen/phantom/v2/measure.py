"""Anatomy measurements of a rendered phantom-v2 subject, for comparison with published adult anatomy.

Every figure is measured on the rendered label map / CT (not read from the parameters), except the tree
generation counts, which are read from the subject's branch lists (a voxel grid cannot count them).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation, binary_erosion

from medgen.findings import LOBES
from medgen.phantom.v2.labels import (
    LOBE_IDS,
    LUNG_IDS,
    TISSUES,
    VERTEBRAE,
    label_id,
    rib_id,
    vertebra_id,
)
from medgen.phantom.v2.trees import SEGMENTAL, generations


def voxel_ml(volume) -> float:
    return float(np.prod(volume.spacing)) / 1000.0


def lung_volumes(labels) -> dict:
    """Total lung volume (L, the five lobe labels), right/left ratio and lobe fractions."""
    lab = labels.array
    ml = voxel_ml(labels)
    lobes = {lobe: float((lab == LOBE_IDS[lobe]).sum()) * ml / 1000 for lobe in LOBES}
    right = sum(v for k, v in lobes.items() if k.startswith("right"))
    left = sum(v for k, v in lobes.items() if k.startswith("left"))
    total = right + left
    return {"total_l": total, "right_l": right, "left_l": left, "right_left_ratio": right / max(left, 1e-9),
            "right_fraction": right / max(total, 1e-9),
            "lobe_fraction": {k: v / max(total, 1e-9) for k, v in lobes.items()}}


def cardiothoracic_ratio(labels) -> dict:
    """Frontal-projection CTR: widest transverse extent of the heart over the widest internal thoracic
    width (lungs, inner rib margin to inner rib margin), as on a PA radiograph."""
    lab = labels.array
    sx = labels.spacing[0]
    heart = np.isin(lab, (label_id("heart"), label_id("left atrial appendage")))
    cols = np.flatnonzero(heart.any(axis=(1, 2)))
    heart_w = (cols.max() - cols.min() + 1) * sx if cols.size else 0.0
    lung = np.isin(lab, LUNG_IDS).any(axis=1)  # (X, Z) frontal projection
    widths = [(np.flatnonzero(c).max() - np.flatnonzero(c).min() + 1) * sx for c in lung.T if c.any()]
    thorax_w = max(widths) if widths else 0.0
    return {"heart_width_mm": float(heart_w), "thorax_width_mm": float(thorax_w),
            "ctr": float(heart_w / thorax_w) if thorax_w else float("nan")}


def tissue_hu(ct, tissue: np.ndarray) -> dict:
    """Mean HU of the voxels of each tissue class whose 3x3x3 neighbourhood is the same tissue (no partial volume)."""
    out = {}
    hu = ct.array.astype(np.float32)
    for name, code in TISSUES.items():
        if name == "trabecular":  # bone samples carry their cortical share: see `trabecular_hu`
            continue
        mask = tissue == code
        if mask.sum() < 8:
            continue
        core = binary_erosion(mask)
        if core.sum() >= 8:
            out[name] = float(hu[core].mean())
    return out


def trabecular_hu(ct, labels) -> float:
    """Mean HU of vertebral cancellous bone: vertebra voxels at least ~5 mm inside the vertebra (eroded), where
    no cortex reaches (the tissue class of bone voxels holds cortex and marrow together)."""
    verts = np.isin(labels.array, [vertebra_id(v) for v in VERTEBRAE])
    core = binary_erosion(verts, iterations=max(1, int(round(5.0 / min(labels.spacing)))))
    return float(ct.array[core].mean()) if core.any() else float("nan")


def lung_density(ct, labels) -> dict:
    """Mean lung HU and the share of lung voxels below -950 HU (LAA-950 %), over the five lobe labels."""
    lung = np.isin(labels.array, LUNG_IDS)
    hu = ct.array[lung].astype(np.float32)
    return {"mean_hu": float(hu.mean()) if hu.size else float("nan"),
            "laa950_percent": float((hu < -950).mean() * 100) if hu.size else float("nan")}


def skeleton_counts(labels) -> dict:
    """Distinct vertebra labels (C7..L2) and rib labels per side present in the label map."""
    present = set(np.unique(labels.array).tolist())
    verts = [v for v in VERTEBRAE if vertebra_id(v) in present]
    thoracic = [v for v in verts if v.startswith("T")]
    ribs = {side: sum(rib_id(s, n) in present for n in range(1, 13)) for side, s in (("right", 1), ("left", -1))}
    return {"vertebrae": len(verts), "thoracic_vertebrae": len(thoracic), "ribs_right": ribs["right"],
            "ribs_left": ribs["left"]}


def trachea_diameter(ct, labels, z_carina: float) -> float:
    """Transverse diameter (mm) of the tracheal air column from its area, averaged over axial slices 10-40 mm
    above the carina: d = 2 sqrt(area / pi), area = the partial-volume air fraction of trachea voxels."""
    lab, hu = labels.array, ct.array.astype(np.float32)
    z = labels.affine[2, 3] + np.arange(lab.shape[2]) * labels.spacing[2]
    ks = np.flatnonzero((z >= z_carina + 10) & (z <= z_carina + 40))
    area_px = labels.spacing[0] * labels.spacing[1]
    diam = []
    for k in ks:
        near = binary_dilation(lab[:, :, k] == label_id("trachea"))  # trachea and its rim
        air = np.clip(-hu[:, :, k][near] / 1000.0, 0, 1)  # air fraction of each voxel (soft tissue ~ 0 HU)
        if air.sum() > 0:
            diam.append(2 * np.sqrt(air.sum() * area_px / np.pi))
    return float(np.mean(diam)) if diam else float("nan")


def tree_summary(trees: dict) -> dict:
    named = trees["named"]
    right = sum(1 for n in SEGMENTAL if n.startswith("R") and n in named)
    left = sum(1 for n in SEGMENTAL if n.startswith("L") and n in named)
    return {"segmental_right": right, "segmental_left": left,
            "airway_generations": generations(trees["airway"], 0.7),
            "artery_generations": generations(trees["artery"]), "vein_generations": generations(trees["vein"])}
