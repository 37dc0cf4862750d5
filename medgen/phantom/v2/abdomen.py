"""Upper abdomen of phantom v2, under the diaphragm: liver, stomach, spleen, kidneys, psoas.

The liver fills the right subphrenic space under the right dome, its left lobe reaching across in front
of the stomach; its lower edge rises from the right flank to the left. The stomach is a J-shaped tube
from the cardia (at the oesophageal hiatus) through the fundus under the left dome, the body and the
antrum to the pylorus, with a wall, fluid content and gas in its non-dependent (anterior, supine)
part. The spleen lies postero-laterally under the left dome along the lower ribs, the kidneys beside the
upper lumbar spine (the right lower than the left) in perirenal fat, their upper poles tilted medially.
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.geom import ellipsoid_sdf, frame, polyline, segment_points, spline
from medgen.phantom.v2.labels import BODY, label_id
from medgen.phantom.v2.lungs import diaphragm_z
from medgen.phantom.v2.subject import Subject

DIAPHRAGM_MM = 4.0


def paint_abdomen(S: Subject, cv: Canvas, rng_gas: float = 0.3):
    a, bf, bb, yc, _ = (float(v) for v in S.cavity(np.asarray(S.dome[1] - 40)))
    z_top = max(S.dome.values()) + 2
    box = cv.box((-a - 5, yc - bb - 5, -1e4), (a + 5, yc + bf + 5, z_top))
    if box is None:
        return
    x, y, z = cv.coords(box)
    d = cv.cache["wall"][1][box]
    zd = diaphragm_z(S, x, y)
    cav = (d < 0) & (z < zd)
    below = cav & (z < zd - DIAPHRAGM_MM)
    cv.paint(box, cav & ~below, BODY, "muscle", only=(BODY,))  # diaphragm
    # liver
    ty = np.clip((y - yc + 0.3 * bb) / (0.3 * bb + 0.9 * bf), 0, 1)
    x_left = 12.0 - (0.62 * a + 12.0) * ty**0.7
    z_low = S.dome[1] - 35 - 150 * np.clip((x + 0.3 * a) / (1.1 * a), 0, 1)
    liver = below & (x > x_left) & (z > z_low) & (d < -1)
    cv.paint(box, liver, label_id("liver"), "liver", only=(BODY,))
    _paint_stomach(S, cv, box, x, y, z, below, a, bf, bb, yc, rng_gas)
    # spleen: against the postero-lateral wall under the left dome
    sc = np.array([-0.74 * a, yc - 0.5 * bb, S.dome[-1] - 58])
    rows = frame([0.25, 0.55, -0.8])
    spleen = (ellipsoid_sdf(x, y, z, sc, (58, 38, 24), rows) < 0) & below & (d < -2)
    spleen &= ellipsoid_sdf(x, y, z, sc + [32, 16, 0], (30, 30, 40)) > 0  # concave hilar surface
    cv.paint(box, spleen, label_id("spleen"), "spleen", only=(BODY,))
    _paint_kidneys(S, cv)


def _paint_stomach(S, cv, box, x, y, z, below, a, bf, bb, yc, gas_level):
    zl = S.dome[-1]
    oes_y = S.y_vb(zl - 25) + S.vb_dims(zl - 25)[1] + 30
    pts = spline([(-25, oes_y, zl - 25), (-0.45 * a, yc - 0.25 * bb, zl - 32), (-0.5 * a, yc + 0.15 * bf, zl - 85),
                  (-0.15 * a, yc + 0.55 * bf, zl - 125), (0.12 * a, yc + 0.35 * bf, zl - 132)], 20)
    rad = np.interp(np.linspace(0, 1, len(pts)), [0, 0.2, 0.55, 0.85, 1], [16, 40, 34, 22, 11])
    segs = polyline(pts, rad)
    wall = np.zeros(cv.grid.shape, bool).reshape(-1)
    lumen = np.zeros(cv.grid.shape, bool).reshape(-1)
    for sid, flat, t, perp in segment_points(cv.grid, segs):
        s = segs[sid]
        r = s[:, 6] + (s[:, 7] - s[:, 6]) * t
        dist = np.sqrt(np.einsum("ij,ij->i", perp, perp))
        wall[flat[dist <= r]] = True
        lumen[flat[dist <= r - 4.0]] = True
    wall, lumen = wall.reshape(cv.grid.shape)[box] & below, lumen.reshape(cv.grid.shape)[box] & below
    cv.paint(box, wall, label_id("stomach"), "soft", only=(BODY, label_id("liver")))
    cv.paint(box, lumen, label_id("stomach"), "gastric", only=(label_id("stomach"),))
    if lumen.any():
        yy = np.broadcast_to(y, lumen.shape)[lumen]
        level = np.quantile(yy, 1 - gas_level)
        cv.paint(box, lumen & (y > level), label_id("stomach"), "gas", only=(label_id("stomach"),))


def _paint_kidneys(S: Subject, cv: Canvas):
    z12 = S.levels["T12"][0]
    aL1 = S.levels["L1"][3]
    for side, name, dz in ((1, "right kidney", -18.0), (-1, "left kidney", 0.0)):
        zc = z12 - 48 + dz
        c = np.array([side * (aL1 + 40), S.y_vb(zc) + 6, zc])
        rows = frame([-side * 0.25, -0.2, 1.0])
        box = cv.box(c - 75, c + 75)
        if box is None:
            continue
        x, y, z = cv.coords(box)
        outer = ellipsoid_sdf(x, y, z, c, (56, 29, 23), rows)
        cv.paint(box, outer < 8, BODY, "fat", only=(BODY, label_id("liver"), label_id("spleen")))
        kid = label_id(name)
        cv.paint(box, outer < 0, kid, "kidney", only=(BODY,))
        sinus = ellipsoid_sdf(x, y, z, c + np.array([-side * 14, 9, 0]), (26, 9, 12), rows) < 0
        cv.paint(box, sinus, BODY, "fat", only=(kid,))
    # psoas muscles beside the upper lumbar bodies
    ztop = S.levels["T12"][0]
    box = cv.box((-90, -300, -1e4), (90, 300, ztop))
    if box is not None:
        x, y, z = cv.coords(box)
        a, b = S.vb_dims(z)
        r = 4 + 14 * np.clip((ztop - z) / 90, 0, 1)
        for side, name in ((1, "right iliopsoas"), (-1, "left iliopsoas")):
            m = ((x - side * (a + r * 0.9)) ** 2 / (1.1 * r) ** 2 + (y - S.y_vb(z)) ** 2 / r**2) < 1
            cv.paint(box, m, label_id(name), "muscle", only=(BODY,))
