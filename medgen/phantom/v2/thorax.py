"""Body wall of phantom v2: the thoracic cavity outline and the layers outside it (ribs' layer, muscles,
subcutaneous fat, breasts), and the wall coordinates other structures are placed in.

Wall coordinates of a point: ``phi`` (rad), its angle around the cavity's centre line measured from the
posterior midline (0) to the anterior midline (pi), and ``d`` (mm), its distance outside the cavity
boundary along the ray from the centre line (< 0 inside the cavity). The boundary is a superellipse per
height (`Subject.cavity`); the layers outside it are, from the inside: ribs and intercostal muscle
(`RIB_LAYER` mm), muscle (paraspinal, pectoral, shoulder girdle, latissimus), fat.
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.labels import BODY, TISSUES, label_id
from medgen.phantom.v2.subject import Subject

RIB_LAYER = 13.0


def wall_coords(S: Subject, x, y, z):
    """(phi, d) wall coordinates of points (broadcastable arrays), float32."""
    a, bf, bb, yc, n = S.cavity(z)
    dy = (y - yc).astype(np.float32)
    x = np.asarray(x, np.float32)
    r = np.sqrt(x * x + dy * dy) + np.float32(1e-3)
    b = np.where(dy > 0, bf, bb).astype(np.float32)
    n = np.asarray(n, np.float32)
    rho = (np.abs(x) / a.astype(np.float32)) ** n + (np.abs(dy) / b) ** n
    rho = rho ** (1 / n)
    d = r * (1 - 1 / np.maximum(rho, 1e-3))
    phi = np.arccos(np.clip(-dy / r, -1, 1))
    return phi.astype(np.float32), d.astype(np.float32)


def wall_point(S: Subject, phi, z, side: int, d=0.0) -> np.ndarray:
    """World points (N, 3) at wall coordinates (phi, d) on `side` (+1 right, -1 left) at heights z."""
    phi, z = np.broadcast_arrays(np.asarray(phi, float), np.asarray(z, float))
    a, bf, bb, yc, n = S.cavity(z)
    ux, uy = side * np.sin(phi), -np.cos(phi)
    b = np.where(uy > 0, bf, bb)
    rho = ((np.abs(ux) / a) ** n + (np.abs(uy) / b) ** n) ** (1 / n)
    r = 1 / np.maximum(rho, 1e-6) + d
    return np.stack([ux * r, yc + uy * r, z], axis=-1)


def _bump(v, centre, width):
    return np.exp(-(((v - centre) / width) ** 2))


def layers(S: Subject, phi, z, x=None):
    """(muscle outer depth, body surface depth, breast bump) below... measured outward from the cavity (mm)."""
    p = S.p
    m = p["muscle"]
    upper = np.clip((z - S.z_xiphi + 20) / 60, 0, 1) * np.clip((S.z_notch + 40 - z) / 40, 0, 1)
    shoulder = np.clip((z - S.levels["T8"][0]) / 60, 0, 1)
    top = np.clip((z - S.z_apex + 40) / 60, 0, 1)
    para = (40 + 12 * np.clip((S.levels["T11"][0] - z) / 80, 0, 1)) * _bump(phi, 0, 0.5)
    muscle = m * (6 + para + 18 * upper * _bump(phi, 2.45, 0.42) + 26 * shoulder * _bump(phi, 0.95, 0.45)
                  + 8 * (1 - shoulder) * _bump(phi, 1.45, 0.5)) + 70 * top * _bump(phi, 1.45, 0.55)
    low = np.clip((S.z_xiphi - 10 - z) / 80, 0, 1)
    fat = p["fat"] * (1 + 0.5 * np.sin(phi) ** 2) * (1 + p["fat_abdomen"] * low) * (1 - 0.4 * top)
    breast = 0.0
    if p["breast"][1] > 0 and x is not None:
        rad, proj, _ = p["breast"]
        zb = S.z_angle - 65.0
        breast = proj * _bump(phi, 2.3, 0.45) * _bump(z, zb, 0.8 * rad)
    mu = RIB_LAYER + muscle
    return mu, mu + fat + breast, breast


def cache_wall(S: Subject, cv: Canvas):
    """Wall coordinates of every sample, cached in ``cv.cache['wall']`` (phi, d)."""
    if "wall" not in cv.cache:
        cv.cache["wall"] = wall_coords(S, *cv.coords())
    return cv.cache["wall"]


def paint_body(S: Subject, cv: Canvas):
    """Body outline and wall layers (muscles, paraspinal muscles, fat, breasts)."""
    x, y, z = cv.coords()
    phi, d = cache_wall(S, cv)
    wall = d > 0  # the layers are evaluated outside the cavity only
    pw = phi[wall]
    zw = np.broadcast_to(z, d.shape)[wall]
    mu, surface, breast = layers(S, pw, zw, x)
    dw = d[wall]
    cv.tissue[...] = 0
    cv.label[...] = 0
    body_w = dw < surface
    cv.label[wall] = np.where(body_w, BODY, 0).astype(np.uint8)
    cv.label[~wall] = BODY
    muscle_w = body_w & (dw < mu)
    # a fat plane between the chest-wall muscles (intercostals, serratus) and the outer muscle layer
    plane = muscle_w & (dw > RIB_LAYER + 5) & (dw < RIB_LAYER + 7.5) & (mu > RIB_LAYER + 16) & (pw > 0.7)
    tissue_w = np.where(muscle_w & ~plane, TISSUES["muscle"], np.where(body_w, TISSUES["fat"], 0)).astype(np.uint8)
    auto = muscle_w & (pw < 0.62) & (dw > 3)
    xw = np.broadcast_to(x, d.shape)[wall]
    lab_w = cv.label[wall]
    for side, name in ((1, "right autochthon"), (-1, "left autochthon")):
        lab_w[auto & ((xw * side) > 1.5)] = label_id(name)
    if np.ndim(breast) and np.max(breast) > 2:
        yw = np.broadcast_to(y, d.shape)[wall]
        inner = (dw > mu + 4) & (dw < mu + 4 + 0.8 * breast) & (breast > 4)
        waves = (np.sin(xw / 7.0 + 1.3) * np.sin(yw / 9.0 + 0.7) + np.sin(zw / 8.0 + 2.1) * np.sin((xw + yw) / 11.0))
        tissue_w[inner & (waves > 1.0 - 2.2 * S.p["breast"][2])] = TISSUES["gland"]  # fibroglandular lobules
    cv.label[wall] = lab_w
    cv.tissue[wall] = tissue_w
    cv.tissue[~wall] = TISSUES["fat"]


def paint_cavity_fat(S: Subject, cv: Canvas):
    """Inside the cavity: mediastinal and abdominal fat (body label); structures are painted over it."""
    _, d = cache_wall(S, cv)
    cv.paint(cv.full(), d <= 0, BODY, "fat")
