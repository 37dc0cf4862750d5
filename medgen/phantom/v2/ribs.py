"""Rib cage and shoulder girdle of phantom v2: 12 rib pairs with costal cartilages, sternum, clavicles,
scapulae.

Rib n leaves the side of vertebra Tn at its head, runs back and out to the tip of Tn's transverse process
(tubercle), turns at its angle and then follows the outside of the pleural cavity forward and down (a
flattened elliptical cross-section) to its costochondral junction. Cartilages 1-7 run on to the sternum
(rib 1 at the manubrium, rib 2 at the sternal angle, rib 7 at the xiphisternal joint), 8-10 join the
cartilage above (the costal margin), 11 and 12 float. Scapulae are triangular plates behind the upper
ribs with a lateral border, a spine and a glenoid; clavicles are S-curved tubes from the manubrium to
the acromion.
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.geom import polyline, segment_points, shell_fraction, spline
from medgen.phantom.v2.labels import TISSUES, label_id, rib_id
from medgen.phantom.v2.spine import transverse_tip
from medgen.phantom.v2.subject import Subject
from medgen.phantom.v2.thorax import RIB_LAYER, wall_coords, wall_point

RIB_CORTEX_MM = 1.5
# angle of the costochondral junction (0 = posterior midline, pi = anterior midline) per rib
PHI_END = (2.55, 2.5, 2.45, 2.42, 2.38, 2.33, 2.28, 2.2, 2.08, 1.95, 1.55, 1.1)


def sternum_y(S: Subject, z):
    """y of the sternum's mid-plane at height z (in the rib layer in front of the cavity)."""
    _, bf, _, yc, _ = S.cavity(np.asarray(z, float))
    return yc + bf + 6.0


def rib_paths(S: Subject):
    """{(side, n): (bone centreline (N, 3), cartilage centreline (M, 3) or None)} for the 12 rib pairs."""
    s = S.p["spine_scale"]
    pitch = 24.0 * s
    out = {}
    for side in (1, -1):
        carts = {}
        for n in range(1, 13):
            zc, yv, h, a, b, _ = S.levels[f"T{n}"]
            head = np.array([side * (a + 3), yv - 0.4 * b, zc + 0.35 * h])
            tub = transverse_tip(S, f"T{n}", side) + np.array([side * 3.0, 5.0, 1.0])
            phi0, _ = wall_coords(S, tub[0], tub[1], tub[2])
            phi0 = float(phi0)
            drop = {1: 1.2, 11: 1.6, 12: 1.0}.get(n, 2.5 + 0.12 * n) * pitch * S.p["rib_drop"]
            phis = np.linspace(phi0 + 0.12, PHI_END[n - 1], 12)
            tau = (phis - phis[0]) / (phis[-1] - phis[0])
            zs = tub[2] - 3.0 - drop * tau**0.75
            shaft = wall_point(S, phis, zs, side, d=4.5)
            bone = spline([head, tub, *shaft], 28)
            cart = None
            if n <= 7:
                z_st = {1: S.z_notch - 14, 2: S.z_angle}.get(n, S.z_angle - (n - 2) * (S.z_angle - S.z_xiphi) / 5)
                phi_c = np.linspace(PHI_END[n - 1], 2.85, 4)[1:]
                zc_ = np.linspace(zs[-1], z_st, 5)[1:4]
                mid = wall_point(S, phi_c, zc_, side, d=6.0)
                w = 15.0 if n > 1 else 22.0
                end = np.array([side * w, float(sternum_y(S, z_st)), z_st])
                cart = spline([shaft[-1], *mid, end], 10)
            elif n <= 10:
                above = carts[n - 1]
                j = len(above) // 2 - (n - 8)
                cart = spline([shaft[-1], (shaft[-1] + above[j]) / 2 + np.array([0, 4.0, 0]), above[j]], 6)
            carts[n] = cart
            out[(side, n)] = (bone, cart)
    return out


def _paint_elliptic_tubes(S: Subject, cv: Canvas, items):
    """Paint flattened bone tubes: items of (centreline, half thickness, half height, label)."""
    best = cv.cache.setdefault("_scratch", np.full(cv.grid.shape, np.inf, np.float32)).reshape(-1)
    for pts, ta, tb, lab in items:
        segs = polyline(pts, max(ta, tb))
        mids = (segs[:, :3] + segs[:, 3:6]) / 2
        yc = S.cavity(mids[:, 2])[3]
        radial = np.stack([mids[:, 0], mids[:, 1] - yc, np.zeros(len(mids))], axis=1)
        tang = segs[:, 3:6] - segs[:, :3]
        radial -= tang * (np.einsum("ij,ij->i", radial, tang) / np.maximum(np.einsum("ij,ij->i", tang, tang), 1e-9))[:, None]
        radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-9)
        touched = []
        for sid, flat, _t, perp in segment_points(cv.grid, segs, pad=1.0):
            vn = np.einsum("ij,ij->i", perp, radial[sid])
            vb2 = np.maximum(np.einsum("ij,ij->i", perp, perp) - vn * vn, 0)
            sdf = ((np.sqrt((vn / ta) ** 2 + vb2 / tb**2) - 1) * min(ta, tb)).astype(np.float32)
            keep = sdf <= 0
            np.minimum.at(best, flat[keep], sdf[keep])
            touched.append(flat[keep])
        if touched:
            flat = np.concatenate(touched)
            flat = flat[best[flat] < np.inf]
            sdf = best[flat]
            inside = flat[sdf <= 0]
            mix = shell_fraction(sdf[sdf <= 0], RIB_CORTEX_MM, cv.step)
            cv.label.reshape(-1)[inside] = lab
            cv.tissue.reshape(-1)[inside] = TISSUES["trabecular"]
            cv.mix.reshape(-1)[inside] = mix
            best[flat] = np.inf


def paint_ribs(S: Subject, cv: Canvas):
    cartilage = label_id("costal cartilages")
    items = []
    for (side, n), (bone, cart) in rib_paths(S).items():
        ta, tb = (5.5, 3.2) if n == 1 else (3.2, 6.0 if n < 11 else 4.5)
        items.append((bone, ta, tb, rib_id(side, n)))
        if cart is not None:
            cv.tubes(polyline(cart, 4.5 if n > 1 else 6.0), cartilage, "cartilage")
    _paint_elliptic_tubes(S, cv, items)


def paint_sternum(S: Subject, cv: Canvas):
    z_top, z_bot = S.z_notch, S.z_xiphi - 35.0
    y_mid = sternum_y(S, np.array([z_top, S.z_xiphi]))
    box = cv.box((-35, float(y_mid.min()) - 15, z_bot - 2), (35, float(y_mid.max()) + 15, z_top + 2))
    if box is None:
        return
    x, y, z = cv.coords(box)
    ys = sternum_y(S, z)
    manubrium = z > S.z_angle
    t_man = np.clip((z_top - z) / (z_top - S.z_angle), 0, 1)
    w = np.where(manubrium, 27 - 12 * t_man, np.where(z > S.z_xiphi, 14 + 3 * np.sin(np.pi * np.clip((S.z_angle - z) / (S.z_angle - S.z_xiphi), 0, 1)),
                                                      8 - 5 * np.clip((S.z_xiphi - z) / 35, 0, 1)))
    th = np.where(manubrium, 6.5, np.where(z > S.z_xiphi, 5.0, 2.5))
    sdf = np.maximum(np.maximum(np.abs(x) - w, np.abs(y - ys) - th), np.maximum(z - z_top, z_bot - z))
    m = sdf <= 0
    cv.paint(box, m, label_id("sternum"), "trabecular", mix=shell_fraction(sdf, 1.2, cv.step))


def paint_clavicles(S: Subject, cv: Canvas):
    zn = S.z_notch
    yf = float(sternum_y(S, zn))
    for side, name in ((1, "right clavicula"), (-1, "left clavicula")):
        pts = spline([(side * 20, yf + 2, zn + 6), (side * 48, yf + 9, zn + 12), (side * 88, yf + 4, zn + 20),
                      (side * 122, yf - 16, zn + 27), (side * 148, yf - 36, zn + 31)], 16)
        _paint_elliptic_tubes(S, cv, [(pts, 6.0, 5.0, label_id(name))])


def paint_scapulae(S: Subject, cv: Canvas):
    """Triangular blades in the wall layer behind ribs 2-7, with lateral border, spine and glenoid."""
    phi_all, d_all = cv.cache["wall"]
    z2, z3, z7, z1 = (S.levels[k][0] for k in ("T2", "T3", "T7", "T1"))
    arc = 125.0  # mm per radian: (phi, z) -> plane coordinates of the blade
    tri = np.array([[0.36 * arc, z2 + 8], [0.55 * arc, z7 - 12], [1.28 * arc, z2 - 10]])
    d0 = RIB_LAYER + 5.0
    for side, name in ((1, "right scapula"), (-1, "left scapula")):
        yc = float(S.cavity(np.asarray(z3))[3])
        lo = (min(side * 0.25 * S.A, side * 250), -250, z7 - 30)
        hi = (max(side * 0.25 * S.A, side * 250), yc + 20, z1 + 45)
        box = cv.box(lo, hi)
        if box is None:
            continue
        x, y, z = cv.coords(box)
        phi, d = phi_all[box], d_all[box]
        ok = (d > d0 - 1) & (d < d0 + 40) & (phi < 1.7) & (x * side > 0)
        u = phi[ok] * arc  # the blade's plane: arc length around the wall, height
        v = np.broadcast_to(z, ok.shape)[ok]
        dd = d[ok]
        (ax_, ay), (bx, by), (cx, cy) = tri
        den = (by - cy) * (ax_ - cx) + (cx - bx) * (ay - cy)
        l1 = ((by - cy) * (u - cx) + (cx - bx) * (v - cy)) / den
        l2 = ((cy - ay) * (u - cx) + (ax_ - cx) * (v - cy)) / den
        l3 = 1 - l1 - l2
        th = 2.5 + 7.0 * np.exp(-((l1 / 0.1) ** 2)) + 3.0 * np.exp(-((l3 / 0.08) ** 2))
        blade = (l1 >= 0) & (l2 >= 0) & (l3 >= 0) & (dd < d0 + th)
        # spine: a ridge from the medial border up to the acromion, rising off the blade
        p0, p1 = np.array([0.4 * arc, z3]), np.array([1.4 * arc, z1 + 8])
        dv = p1 - p0
        t = np.clip(((u - p0[0]) * dv[0] + (v - p0[1]) * dv[1]) / (dv @ dv), 0, 1.1)
        dist = np.hypot(u - p0[0] - t * dv[0], v - p0[1] - t * dv[1])
        spine = (dist < 4.5 + 2 * t) & (dd < d0 + 4 + 22 * t)
        glenoid = (np.hypot(u - tri[2, 0] - 4, v - tri[2, 1]) < 15) & (dd < d0 + 28)
        m = np.zeros(ok.shape, bool)
        m[ok] = blade | spine | glenoid
        cv.paint(box, m, label_id(name), "trabecular", mix=np.float32(0.6))
