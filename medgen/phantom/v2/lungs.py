"""Lungs of phantom v2: diaphragm domes, pleural spaces with apices and costophrenic recesses, lobes.

Each lung fills its half of the thoracic cavity (x > 0 right, x < 0 left) above the diaphragm and below
an apical cap, less the spine; the mediastinum is painted over it afterwards. The diaphragm surface
z = `diaphragm_z`(x, y) has one dome per side (the right higher, by the subject's ``dome_diff``) that falls
away to the chest wall, deepest posteriorly: the lung follows it down into thin posterior and lateral
costophrenic recesses. Lobes are split by the oblique fissures (both sides) and the right horizontal
fissure.
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.labels import LOBE_IDS, TISSUES
from medgen.phantom.v2.subject import Subject

# oblique fissure height at the back (fraction of apex -> dome height), horizontal fissure below the carina
FISSURE_POST = {1: 0.31, -1: 0.22}
SPLIT_X = -5.0  # the lungs' dividing plane, left of the midline (the heart and aortic arch lie left)
HORIZONTAL_BELOW_CARINA = 0.21


def _base(S: Subject):
    """Cavity half width, front/back depth and centre y at the dome level."""
    a, bf, bb, yc, _ = S.cavity(np.asarray(S.dome[1]))
    return float(a), float(bf), float(bb), float(yc)


def diaphragm_z(S: Subject, x, y):
    """Height (mm) of the diaphragm's upper surface under each point; right and left domes."""
    a, bf, bb, yc = _base(S)
    dp, dl, da = S.p["dome_depth"]
    dm = 0.45 * da + 10.0
    out = None
    for s in (1, -1):
        nx = (x / a - s * 0.47) / 0.53
        ny = np.where(y > yc + 0.1 * bf, (y - yc - 0.1 * bf) / bf, (y - yc - 0.1 * bf) / bb)
        q = nx * nx + ny * ny
        sq = np.sqrt(q) + 1e-6
        wp, wa = np.clip(-ny / sq, 0, 1) ** 2, np.clip(ny / sq, 0, 1) ** 2
        wl, wm = np.clip(s * nx / sq, 0, 1) ** 2, np.clip(-s * nx / sq, 0, 1) ** 2
        depth = (dp * wp + da * wa + dl * wl + dm * wm) / (wp + wa + wl + wm)
        zs = S.dome[s] - depth * np.minimum(q, 1.5) ** 0.9
        out = zs if out is None else np.maximum(out, zs)
    return out


def apex_cap(S: Subject, x, y, side: int):
    """Height of the apical cap of one lung above (x, y): a paraboloid through the apex."""
    a, _, bb, yc = _base(S)
    xa, ya = side * 0.36 * a, yc - 0.25 * bb
    q = ((x - xa) / (0.5 * a)) ** 2 + ((y - ya) / (0.75 * bb)) ** 2
    return S.apex[side] - 0.3 * S.H * q


def lung_side(S: Subject, x, y, z, d):
    """+1 (right lung), -1 (left lung) or 0 for points with wall depth `d` (`thorax.wall_coords`)."""
    side = np.where(x > S.x_mid + SPLIT_X, 1, -1).astype(np.int8)
    inside = (d < -0.5) & (z > diaphragm_z(S, x, y))
    inside &= z < np.where(side > 0, apex_cap(S, x, y, 1), apex_cap(S, x, y, -1))
    a, b = S.vb_dims(z)
    yv = S.y_vb(z)
    spine = ((x / (a + 4)) ** 2 + ((y - yv) / (b + 4)) ** 2 < 1) | ((np.abs(x) < a + 6) & (y < yv))
    return np.where(inside & ~spine, side, 0).astype(np.int8)


def lobe_of(S: Subject, x, y, z, side):
    """LOBE_IDS value per point given its lung side (0 -> 0)."""
    a, bf, bb, yc = _base(S)
    y_b, y_f = yc - bb, yc + bf
    t = np.clip((y - y_b) / (y_f - y_b), 0, 1)
    out = np.zeros(np.shape(side), np.uint8)
    for s, upper, middle, lower in ((1, "right_upper", "right_middle", "right_lower"),
                                    (-1, "left_upper", None, "left_lower")):
        z_p = S.apex[s] - FISSURE_POST[s] * S.H
        z_a = S.dome[s] - 0.05 * S.H
        z_obl = z_p + (z_a - z_p) * t ** 0.85 + 0.12 * (s * x - 0.5 * a)
        here = side == s
        low = z < z_obl
        out[here & low] = LOBE_IDS[lower]
        if middle is None:
            out[here & ~low] = LOBE_IDS[upper]
        else:
            z_h = S.z_car - HORIZONTAL_BELOW_CARINA * S.H - 0.05 * (y - yc)
            out[here & ~low & (z < z_h)] = LOBE_IDS[middle]
            out[here & ~low & (z >= z_h)] = LOBE_IDS[upper]
    return out


def envelope_at(S: Subject, grid, box) -> np.ndarray:
    """The mediastinal envelope field (0..1, > 0.5 inside) trilinearly sampled at the voxels of `box` of `grid`."""
    field, plan = S.envelope
    out = np.asarray(field, np.float32)
    for dim in range(3):
        pos = (grid.axis(dim)[box[dim]] - plan.origin[dim]) / plan.spacing[dim]
        inside = (pos >= 0) & (pos <= plan.shape[dim] - 1)
        pos = np.clip(pos, 0, plan.shape[dim] - 1)
        i0 = np.minimum(np.floor(pos).astype(int), max(plan.shape[dim] - 2, 0))
        w = (pos - i0).astype(np.float32).reshape([-1 if d == dim else 1 for d in range(3)])
        i1 = np.minimum(i0 + 1, plan.shape[dim] - 1)
        out = np.take(out, i0, axis=dim) * (1 - w) + np.take(out, i1, axis=dim) * w
        out = out * inside.reshape([-1 if d == dim else 1 for d in range(3)])
    return out


def lung_box(S: Subject, cv: Canvas):
    a, bf, bb, yc = _base(S)
    z_lo = min(S.dome.values()) - S.p["dome_depth"][0] * 1.5 - 5
    return cv.box((-a - 5, yc - bb - 25, z_lo), (a + 5, yc + bf + 10, max(S.apex.values()) + 2))


def paint_lungs(S: Subject, cv: Canvas):
    """Paint both lungs (lobe labels, tissue 'lung') over the cavity."""
    box = lung_box(S, cv)
    if box is None:
        return
    x, y, z = cv.coords(box)
    d = cv.cache["wall"][1][box]
    side = lung_side(S, x, y, z, d)
    if S.envelope is not None:
        side[envelope_at(S, cv.grid, box) > 0.5] = 0
    lobes = lobe_of(S, x, y, z, side)
    lab, tis = cv.label[box], cv.tissue[box]
    m = lobes > 0
    lab[m] = lobes[m]
    tis[m] = TISSUES["lung"]
    cv.mix[box][m] = 0.0
