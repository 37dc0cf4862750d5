"""Findings of phantom v2: lung lesions in the requested lobe, pleural effusion in the dependent pleural
space, emphysema as low-attenuation lung.

Placement is decided on the subject's 5 mm planning grid in world millimetres (so a seed gives the same
findings at every image resolution); lesion shapes, HU and placement tiers are phantom v1's
(`medgen.phantom.lesions`), applied to v2's lobes. Fluid fills the lowest part of a supine pleural space
first (posterior, then basal); emphysema takes a smooth regional field (upper-lobe weighted when so
reported) and, inside it, world-coordinate texture for the clusters below -950 HU.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import ndtri

from medgen.findings import LABELS, LOBES, Findings
from medgen.phantom import lesions as v1
from medgen.phantom.anatomy import smooth_field
from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.geom import Grid
from medgen.phantom.v2.labels import EFFUSION, EMPHYSEMA, LOBE_IDS, TISSUES

SIDE_IDS = {side: [LOBE_IDS[lb] for lb in LOBES if lb.startswith(side)] for side in ("right", "left")}
_WAVES = 12


def v1_lobes(plan_labels: np.ndarray) -> np.ndarray:
    """Plan lobe map in phantom v1's label values (for `medgen.phantom.lesions.place_lesions`)."""
    out = np.zeros(plan_labels.shape, np.uint8)
    for lobe in LOBES:
        out[plan_labels == LOBE_IDS[lobe]] = LABELS[lobe]
    return out


def world_field(params: np.ndarray, x, y, z):
    """Resolution-independent texture: a sum of plane waves (rows k_x, k_y, k_z, phase), ~N(0, 1)."""
    out = 0.0
    for kx, ky, kz, ph in params:
        out = out + np.sin(kx * x + ky * y + kz * z + ph)
    return out * np.float32(np.sqrt(2.0 / len(params)))


def wave_params(rng, wavelength_mm: tuple[float, float], n: int = _WAVES) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelength_mm, n)
    return np.column_stack([d * k[:, None], rng.uniform(0, 2 * np.pi, n)]).astype(np.float32)


def plan_findings(rng, findings: Findings, plan: Grid, plan_labels: np.ndarray) -> dict:
    """Lesion centres (filled into `findings`), effusion levels and the emphysema field, on the plan grid."""
    lobes = v1_lobes(plan_labels)
    _, y, z = plan.coords()
    out = {"effusion": {}, "emphysema": None, "lesions": []}
    fluid = np.zeros(lobes.shape, bool)
    if findings.effusion is not None:
        sides = ("left", "right") if findings.effusion.side == "bilateral" else (findings.effusion.side,)
        for side in sides:
            lung = np.isin(plan_labels, SIDE_IDS[side])
            if not lung.any():
                continue
            z_low = float(np.broadcast_to(z, lung.shape)[lung].min())
            score = np.broadcast_to(y + 0.3 * (z - z_low), lung.shape)
            frac = float(rng.uniform(*v1.EFFUSION_FRACTION[findings.effusion.grade]))
            thr = float(np.quantile(score[lung], frac))
            fluid |= lung & (score < thr)
            out["effusion"][side] = {"fraction": round(frac, 4), "threshold": thr, "z_low": z_low,
                                     "volume_ml": round(frac * int(lung.sum()) * v1.PLAN_MM**3 / 1000, 1)}
    if findings.emphysema is not None:
        lung = np.isin(plan_labels, list(LOBE_IDS.values())) & ~fluid
        field = smooth_field(rng, plan, 12.0)
        if findings.emphysema.upper_predominant and lung.any():
            zz = np.broadcast_to(z, lung.shape)
            lo, hi = zz[lung].min(), zz[lung].max()
            field = field + 1.6 * (np.broadcast_to(z, lung.shape) - (lo + hi) / 2) / max(hi - lo, 1.0)
        (c_lo, c_hi), affected = v1.EMPHYSEMA_FRACTION[findings.emphysema.grade]
        cluster = float(rng.uniform(c_lo, c_hi))
        affected = max(affected, cluster * 1.6)
        thr = float(np.quantile(field[lung], 1 - affected)) if lung.any() else np.inf
        out["emphysema"] = {"field": field.astype(np.float32), "threshold": thr, "affected": affected,
                            "cluster": cluster, "waves": wave_params(rng, (4.0, 9.0)),
                            "cluster_q": float(ndtri(1 - cluster / affected))}
    shapes = [v1.LesionShape.sample(rng, lesion) for lesion in findings.lesions]
    placed = v1.place_lesions(rng, findings.lesions, shapes, lobes, fluid, plan)
    for lesion, place in zip(findings.lesions, placed, strict=True):
        lesion.center_mm = tuple(place["center_mm"])
    out["lesions"] = placed
    out["shapes"] = shapes
    return out


def paint_effusion(plan_out: dict, cv: Canvas):
    x, y, z = cv.coords()
    for side, e in plan_out["effusion"].items():
        lung = np.isin(cv.label, SIDE_IDS[side])
        fluid = lung & ((y + 0.3 * (z - e["z_low"])) < e["threshold"])
        cv.paint(cv.full(), fluid, EFFUSION, "effusion")


def paint_emphysema(plan_out: dict, plan: Grid, cv: Canvas):
    e = plan_out["emphysema"]
    if e is None:
        return
    lung = np.isin(cv.label, list(LOBE_IDS.values()))
    if not lung.any():
        return
    idx = np.nonzero(lung)
    pts = [cv.grid.origin[d] + idx[d] * cv.grid.spacing[d] for d in range(3)]
    coords = [(pts[d] - plan.origin[d]) / plan.spacing[d] for d in range(3)]
    field = map_coordinates(e["field"], coords, order=1, mode="nearest")
    affected = field > e["threshold"]
    tex = world_field(e["waves"], *(p[affected].astype(np.float32) for p in pts))
    cluster = np.zeros_like(affected)
    cluster[affected] = tex > e["cluster_q"]
    sel = tuple(i[affected] for i in idx)
    cv.label[sel] = EMPHYSEMA
    cv.tissue[sel] = TISSUES["emphysema"]
    sel = tuple(i[cluster] for i in idx)
    cv.tissue[sel] = TISSUES["emphysema_cluster"]

