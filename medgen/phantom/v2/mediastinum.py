"""Heart and great vessels of phantom v2: chambers, aorta and arch branches, venae cavae, brachiocephalic
veins, pulmonary trunk and arteries, central pulmonary veins, trachea, oesophagus, thyroid.

The heart is four ellipsoidal chambers (left ventricle along the long axis from the mitral valve to the
apex, which points anteriorly, to the left and down; right ventricle in front of it; atria behind and to
the right) in epicardial fat; tubes follow smooth curves through landmarks derived from the carina, the
spine and the cavity. Every structure pushes the lungs back by a rim of mediastinal fat.
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.geom import ellipsoid_sdf, frame, polyline, spline
from medgen.phantom.v2.labels import BODY, LUNG_IDS, label_id
from medgen.phantom.v2.lungs import diaphragm_z
from medgen.phantom.v2.subject import Subject

TOP = 400.0  # vessels and the trachea leave every field of view at the top


def _tube(points, radii, n=None):
    pts = spline(points, n or max(8, 3 * len(points)))
    rad = np.interp(np.linspace(0, 1, len(pts)), np.linspace(0, 1, len(np.atleast_1d(radii))), np.atleast_1d(radii))
    return polyline(pts, rad)


class Mediastinum:
    """Landmarks, chambers and tubes of one subject's mediastinum."""

    def __init__(self, S: Subject):
        p = S.p
        self.S = S
        sx, sz = S.A / 128.0, S.H / 206.0
        hs = p["heart_size"] * (S.A / 150.0) ** 0.9
        xm, zc = S.x_mid, S.z_car
        a4, b4 = S.vb_dims(zc)
        self.y_oes = lambda z: S.y_vb(z) + S.vb_dims(z)[1] + 10.0
        yo = float(self.y_oes(zc))
        rt = p["trachea_r"]
        yt = yo + 8.0 + rt + 3.0  # trachea just in front of the oesophagus
        self.y_t = yt
        a_dome, bf, _, yc, _ = S.cavity(np.asarray(S.dome[-1] + 30))
        # --- heart: base (atrioventricular plane) behind, apex in front-left-down -----------------------------
        y_la = yo + 30.0
        z_floor = float(diaphragm_z(S, np.float32(xm - 25), np.float32(yc + 0.3 * bf)))  # central tendon
        self.z_floor = z_floor
        la = np.array([xm - 4 + 0.5 * p["heart_dx"], y_la, min(zc - 40 * sz, z_floor + 88 * hs) + p["heart_dz"]])
        base = la + np.array([-12.0, 26.0, -16.0]) * hs
        apex = np.array([xm - 0.47 * float(a_dome) + p["heart_dx"] + 60.0 * p["heart_rot"], float(yc + 0.72 * bf),
                         z_floor + 14.0])
        e = frame(apex - base)
        ant = np.array([0.45, 0.85, 0.1])
        e2 = ant - e[0] * (ant @ e[0])
        e2 /= np.linalg.norm(e2)
        rows = np.stack([e[0], e2, np.cross(e[0], e2)])
        length = float(np.linalg.norm(apex - base)) + 12.0
        lv_c = apex - e[0] * (0.5 * length) - e2 * 6 * hs
        ra_c = np.array([xm + 20 * hs + p["heart_dx"] * 0.5, y_la + 24 * hs, z_floor + 40 * hs])
        # name: (centre, semi-axes, rows, wall thickness)
        self.chambers = {
            "lv": (lv_c, np.array([0.52 * length, 37 * hs, 37 * hs]), rows, 10.0),
            "rv": (lv_c + e2 * 29 * hs - rows[2] * 10 * hs + e[0] * 2, np.array([0.48 * length, 23 * hs, 42 * hs]), rows, 4.0),
            "la": (la, np.array([36, 22, 26]) * hs, None, 2.5),
            "ra": (ra_c, np.array([30, 28, 40]) * hs, None, 2.5),
        }
        self.laa = (la + np.array([-34, 22, 10]) * hs, np.array([13, 8, 9]) * hs)
        self.ra_c, self.la_c = ra_c, la
        # --- great vessels -------------------------------------------------------------------------------
        r_asc, r_desc = p["aorta_r"]
        av = la + np.array([8, 30, -4]) * hs
        y_asc = yt + 34.0 * sx
        xa = -(S.vb_dims(zc - 40)[0] + 0.6 * r_desc)
        zd = S.dome[-1]
        desc = [(xm + xa, S.y_vb(z) + 0.3 * S.vb_dims(z)[1], z) for z in (zc - 35, zc - 110 * sz)]
        hiatus = (xm - 8, S.y_vb(zd - 25) + S.vb_dims(zd - 25)[1] + r_desc, zd - 25)
        aorta = _tube([av, (xm + 14 * sx, y_asc, zc - 22 * sz), (xm + 12 * sx, y_asc - 4, zc + 4),
                       (xm + 2, y_asc - 20, zc + 25 * sz), (xm - 15 * sx, yt - 4, zc + 22 * sz),
                       (xm + xa, yo - 6, zc + 2), *desc, hiatus,
                       (xm - 6, S.y_vb(-300) + S.vb_dims(-300)[1] + r_desc, -300.0)],
                      [r_asc * 1.05, r_asc, r_asc * 0.92, 0.85 * r_asc, 0.8 * r_asc, r_desc, r_desc, r_desc,
                       0.92 * r_desc, 0.85 * r_desc], n=40)
        z_top = zc + 28 * sz
        ap_r, ap_l = S.apex[1], S.apex[-1]
        bif = (xm + 18 * sx, yt + 8, zc + 62 * sz)
        self.tubes = [  # (name, segments, label, tissue, fat margin mm)
            ("aorta", aorta, label_id("aorta"), "blood", 3.0),
            ("bct", _tube([(xm + 5, y_asc - 16, z_top), (xm + 14 * sx, yt + 10, zc + 50 * sz), bif], 6.5),
             label_id("brachiocephalic trunk"), "blood", 3.0),
            ("rsa", _tube([bif, (xm + 34 * sx, yt + 2, ap_r + 8), (xm + 70 * sx, yt - 8, ap_r + 6),
                           (xm + 125 * sx, yt - 12, ap_r - 12)], 5.0), label_id("right subclavian artery"), "blood", 2.0),
            ("rcca", _tube([bif, (xm + 22 * sx, yt + 6, TOP)], 4.2), label_id("right common carotid artery"), "blood", 2.0),
            ("lcca", _tube([(xm - 4, y_asc - 22, z_top), (xm - 16 * sx, yt + 6, zc + 60 * sz),
                            (xm - 24 * sx, yt + 4, TOP)], 4.5), label_id("left common carotid artery"), "blood", 2.0),
            ("lsa", _tube([(xm - 14 * sx, yt - 2, z_top - 4), (xm - 28 * sx, yt - 6, zc + 60 * sz),
                           (xm - 40 * sx, yt - 6, ap_l + 8), (xm - 75 * sx, yt - 10, ap_l + 6),
                           (xm - 125 * sx, yt - 12, ap_l - 12)], 5.5), label_id("left subclavian artery"), "blood", 2.0),
        ]
        conf = (xm + 30 * sx, y_asc + 4, zc + 34 * sz)
        ra_top = ra_c + np.array([-2, 0, 24 * hs])
        ra_bot = ra_c + np.array([-10, -4, -26 * hs])
        ivc_z = S.dome[1] - 35
        self.tubes += [
            ("rbcv", _tube([(xm + 75 * sx, yt + 14, ap_r + 25), (xm + 45 * sx, y_asc + 4, zc + 52 * sz), conf], 7.0),
             label_id("right brachiocephalic vein"), "blood", 2.0),
            ("lbcv", _tube([(xm - 80 * sx, yt + 16, ap_l + 18), (xm - 30 * sx, y_asc + 10, zc + 52 * sz),
                            (xm + 4, y_asc + 12, zc + 46 * sz), conf], 6.5), label_id("left brachiocephalic vein"), "blood", 2.0),
            ("svc", _tube([conf, (xm + 31 * sx, y_asc + 2, zc - 10), ra_top], 10.0),
             label_id("superior vena cava"), "blood", 2.0),
            ("ivc", _tube([ra_bot, (xm + 22 * sx, S.y_vb(ivc_z) + S.vb_dims(ivc_z)[1] + 16, ivc_z),
                           (xm + 20 * sx, S.y_vb(-300) + 30, -300.0)], 12.0), label_id("inferior vena cava"), "blood", 2.0),
        ]
        # pulmonary trunk and arteries (no MAISI label: body), central veins
        pa = p["pa_r"]
        pbif = (xm - 12 * sx, yt + 14, zc - 8)
        self.hilum = {1: np.array([xm + 50 * sx, yt + 2, zc - 24 * sz]), -1: np.array([xm - 50 * sx, yt - 10, zc - 12 * sz])}
        self.tubes += [
            ("pa", _tube([lv_c + e2 * 26 * hs - e[0] * (0.3 * length) + np.array([0, 0, 26]),
                          (xm - 14 * sx, y_asc + 8, zc - 28 * sz), pbif], pa), BODY, "blood", 3.0),
            ("rpa", _tube([pbif, (xm + 12 * sx, yt + 12, zc - 14), (xm + 36 * sx, yt + 6, zc - 20 * sz), self.hilum[1]],
                          [0.75 * pa, 0.72 * pa, 0.7 * pa, 0.6 * pa]), BODY, "blood", 3.0),
            ("lpa", _tube([pbif, (xm - 26 * sx, yt + 6, zc - 2), (xm - 40 * sx, yt - 4, zc - 6), self.hilum[-1]],
                          [0.72 * pa, 0.7 * pa, 0.65 * pa, 0.6 * pa]), BODY, "blood", 3.0),
        ]
        self.pv_ends = {
            ("right", "superior"): np.array([xm + 46 * sx, yt + 16, zc - 38 * sz]),
            ("right", "inferior"): np.array([xm + 42 * sx, yt - 4, zc - 64 * sz]),
            ("left", "superior"): np.array([xm - 46 * sx, yt + 8, zc - 30 * sz]),
            ("left", "inferior"): np.array([xm - 42 * sx, yt - 8, zc - 56 * sz]),
        }
        for (side, level), end in self.pv_ends.items():
            s = 1 if side == "right" else -1
            start = la + np.array([s * 26 * hs, 6 if level == "superior" else -4, 8 if level == "superior" else -8])
            self.tubes.append((f"pv_{side}_{level}", _tube([start, (start + end) / 2 + [0, 4, 0], end], 7.0),
                               label_id("pulmonary vein"), "blood", 2.0))
        # oesophagus and trachea (trachea: wall then lumen)
        zo = [TOP, zc + 40, zc - 60, zd + 5]
        oes = [(xm - 3, self.y_oes(z) + (8 if z == TOP else 0), z) for z in zo]
        oes += [(xm - 22 * sx, self.y_oes(zd - 20) + 20, zd - 22)]
        self.tubes.append(("oesophagus", _tube(oes, 8.0), label_id("esophagus"), "soft", 3.0))
        self.carina = np.array([xm + 2, yt, zc])
        self.trachea = _tube([(xm, yt + 22, TOP), (xm, yt + 16, S.z_apex + 10), (xm + 1, yt + 6, zc + 40), self.carina], rt)
        # thyroid lobes beside the trachea at the thoracic inlet
        zt = S.z_apex + 22
        self.thyroid = [((s * (rt + 10), yt + 20, zt), (10, 12, 22)) for s in (1, -1)] + [((0, yt + 22 + rt, zt - 10), (14, 5, 7))]

    def heart_sdf(self, x, y, z):
        return np.minimum.reduce([ellipsoid_sdf(x, y, z, c, ax, rows) for c, ax, rows, _ in self.chambers.values()])

    def paint(self, cv: Canvas):
        S = self.S
        lo = np.min([c - ax.max() for c, ax, _, _ in self.chambers.values()], axis=0) - 12
        hi = np.max([c + ax.max() for c, ax, _, _ in self.chambers.values()], axis=0) + 12
        box = cv.box(lo, hi)
        if box is not None:
            x, y, z = cv.coords(box)
            sdf = self.heart_sdf(x, y, z)
            floor = (z > diaphragm_z(S, x, y) - 6) & (cv.cache["wall"][1][box] < -1.0)
            cv.paint(box, (sdf < 6.0) & floor, BODY, "fat", only=(*LUNG_IDS, BODY))
            heart = label_id("heart")
            for c, ax, rows, _wall in self.chambers.values():
                outer = ellipsoid_sdf(x, y, z, c, ax, rows)
                cv.paint(box, (outer < 0) & floor, heart, "myocardium")
            for c, ax, rows, wall in self.chambers.values():
                inner = ellipsoid_sdf(x, y, z, c, ax - wall, rows)
                cv.paint(box, (inner < 0) & floor, heart, "blood")
            c, ax = self.laa
            cv.paint(box, ellipsoid_sdf(x, y, z, c, ax) < 0, label_id("left atrial appendage"), "blood")
        for _name, segs, lab, tissue, margin in self.tubes:
            cv.tube_layers(segs, [(margin, BODY, "fat", LUNG_IDS), (0.0, lab, tissue, None)])
        trachea = label_id("trachea")
        cv.tube_layers(self.trachea, [(5.0, BODY, "fat", LUNG_IDS), (2.0, trachea, "soft", None), (0.0, trachea, "air", None)])
        box = cv.box((-60, self.y_t - 20, S.z_apex - 30), (60, self.y_t + 60, S.z_apex + 70))
        if box is not None:
            x, y, z = cv.coords(box)
            gland = np.minimum.reduce([ellipsoid_sdf(x, y, z, c, ax) for c, ax in self.thyroid]) < 0
            cv.paint(box, gland, label_id("thyroid gland"), "thyroid", only=(BODY,))
