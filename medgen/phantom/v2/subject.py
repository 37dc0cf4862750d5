"""One phantom-v2 subject: population parameters drawn from a seed, and the landmarks derived from them.

A subject is a json-serialisable dict of parameters (`sample_params`) plus one free scale, ``lung_scale``,
which `medgen.phantom.v2.phantom` sets so that the painted lungs hold the subject's drawn lung volume.
`Subject` turns the parameters into world-millimetre landmarks (RAS+: +x = patient's right, +y =
anterior, +z = superior; the right lung lies at x > 0), the thoracic-cavity profile and the spine levels.

Population (adults 25-75 years): sex; standing height (normal, by sex); total lung capacity from the
ECSC/ERS prediction equations (Quanjer et al. 1993, Stocks & Quanjer 1995) with a residual drawn inside
+/-1.3 residual SD; body habitus (subcutaneous fat, muscle); heart size and position; diaphragm height and
the right-left dome difference; spine curvature.
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.v2.labels import VERTEBRAE

# ECSC 1993 TLC prediction: litres = a * height_m + b, residual SD (Quanjer et al., Eur Respir J 1993 Suppl 16)
TLC_EQUATION = {"male": (7.99, -7.08, 0.70), "female": (6.60, -5.79, 0.60)}
# vertebral body height, half width, half depth (mm) and the disc below it, for a 1.75 m adult
_SPINE = {"C7": (14.0, 11.0, 8.0, 5.0), "T1": (15.0, 14.0, 8.5, 4.0), "T12": (23.5, 20.0, 14.5, 6.0),
          "L1": (25.0, 21.5, 15.5, 8.5), "L2": (26.0, 22.5, 16.0, 9.5)}


def predicted_tlc(sex: str, height_m: float) -> tuple[float, float]:
    """(predicted TLC in litres, residual SD) from the ECSC equations."""
    a, b, rsd = TLC_EQUATION[sex]
    return a * height_m + b, rsd


def sample_params(rng: np.random.Generator) -> dict:
    """Population parameters of one adult subject (mm unless noted), json-serialisable."""

    def u(lo, hi):
        return round(float(rng.uniform(lo, hi)), 3)

    sex = "male" if rng.random() < 0.5 else "female"
    male = sex == "male"
    height = float(np.clip(rng.normal(1.77 if male else 1.64, 0.07 if male else 0.065), 1.55 if male else 1.48,
                           1.95 if male else 1.80))
    tlc, rsd = predicted_tlc(sex, height)
    tlc_z = float(np.clip(rng.normal(0, 0.6), -1.3, 1.3))
    size = height / 1.75
    return {
        "sex": sex, "age": u(25, 75), "height_m": round(height, 3), "tlc_z": round(tlc_z, 3),
        "lung_volume_l": round(tlc + tlc_z * rsd, 3),
        "lung_scale": 1.0,
        # thoracic cavity aspect (lateral, AP, craniocaudal) and apex
        "aspect": [u(0.95, 1.05), u(0.94, 1.06), u(0.95, 1.05)], "apex_z": u(-8, 8), "apex_dz": u(-6, 6),
        "dome_diff": u(6, 22), "dome_depth": [u(62, 80), u(42, 56), u(18, 28)],  # posterior, lateral, anterior
        # heart: size, leftward shift, base height below the carina, apex direction spread
        "heart_size": round(u(0.92, 1.08) * (1.0 if male else 0.93), 3), "heart_dx": u(-6, 6),
        "heart_rot": u(-0.12, 0.12), "heart_dz": u(-8, 8),
        # great vessels and airway (radii, mm)
        "aorta_r": [round(u(14, 17) * (1 if male else 0.9), 2), round(u(10.5, 12.5) * (1 if male else 0.9), 2)],
        "pa_r": round(u(12, 14) * (1 if male else 0.93), 2), "trachea_r": u(8.0, 10.5) if male else u(6.8, 8.8),
        "carina_dz": u(78, 92),
        # spine
        "spine_scale": round(size * u(0.96, 1.04), 3), "kyphosis": u(14, 30),
        # body wall: subcutaneous fat, muscle, breast
        "fat": u(6, 22) * (1.0 if male else 1.3), "fat_abdomen": u(0.1, 0.8), "muscle": u(0.8, 1.2) * (1 if male else 0.8),
        "breast": [u(40, 65), u(15, 55), u(0.15, 0.5)] if not male else [0.0, 0.0, 0.0],
        # ribs: extra anterior drop factor, cartilage calcification not modelled
        "rib_drop": u(0.9, 1.1),
        # image: noise at 1.25 mm and its kernel cutoff (cycles/mm)
        "noise_hu": u(10, 18), "nps_cutoff": u(0.35, 0.5),
    }


class Subject:
    """World-mm landmarks of one subject (see `sample_params`)."""

    def __init__(self, params: dict):
        p = self.p = params
        # the lung volume scales height more than width (tall subjects have long lungs): V ~ k^0.9 k^0.95 k^1.15
        k = float(p["lung_scale"]) * (float(p["lung_volume_l"]) / 5.8) ** (1 / 3)
        aw, ad, ah = p["aspect"]
        self.A = 128.0 * k**0.9 * aw  # half width of the cavity at its widest (inner rib surface)
        self.B_back = 92.0 * k**0.95 * ad
        self.B_front = 77.0 * k**0.95 * ad
        self.H = 218.0 * k**1.15 * ah  # apex -> right dome
        # apex placed so the lungs (apex to posterior recess) sit in the middle of a 320 mm field of view
        self.z_apex = float(np.clip(0.5 * (self.H + p["dome_depth"][0]) - 8.0 + p["apex_z"], 112.0, 145.0))
        self.apex = {1: self.z_apex + p["apex_dz"] / 2, -1: self.z_apex - p["apex_dz"] / 2}
        self.dome = {1: self.z_apex - self.H}
        self.dome[-1] = self.dome[1] - p["dome_diff"]
        self.z_car = self.z_apex - p["carina_dz"] * self.H / 218.0
        self.x_mid = 0.0
        self.envelope = None  # mediastinal envelope (field, grid), set by `medgen.phantom.v2.phantom.calibrate`
        # body surface: front ~ yc + B_front + wall; the anatomy is placed so the body is centred at y = 0
        front = self.B_front + 14 + 12 * p["muscle"] + p["fat"]
        back = self.B_back + 12 + 45 * p["muscle"] + 0.6 * p["fat"]
        self.y0 = -(front - back) / 2  # cavity centre at the T7 level
        self.y_spine = self.y0 - self.B_back + 30.0  # vertebral-body axis at T7, 30 mm before the gutters
        self._spine()
        self.z_notch = self.z_apex - 32.0 * self.H / 218.0  # jugular notch of the manubrium
        self.z_angle = self.z_notch - 45.0 * self.H / 218.0  # sternal angle (rib 2)
        self.z_xiphi = self.z_angle - 100.0 * self.H / 218.0  # xiphisternal joint (rib 7)

    # ---- spine ----------------------------------------------------------------------------------
    def _spine(self):
        s = float(self.p["spine_scale"])
        names = list(VERTEBRAE)
        t1, t12 = np.array(_SPINE["T1"]), np.array(_SPINE["T12"])
        dims = {}
        for i, name in enumerate(names):
            if name in _SPINE and name not in ("T1", "T12"):
                dims[name] = np.array(_SPINE[name])
            else:
                f = (i - 1) / 11.0
                dims[name] = t1 + (t12 - t1) * f
        dims = {k_: v * s for k_, v in dims.items()}
        z = self.z_apex - 10.0  # T1 centre near the apex level
        zs = {"T1": z}
        for a, b in zip(names[1:], names[2:], strict=False):
            z = z - dims[a][0] / 2 - dims[a][3] - dims[b][0] / 2
            zs[b] = z
        zs["C7"] = zs["T1"] + dims["T1"][0] / 2 + dims["C7"][3] + dims["C7"][0] / 2
        self.z_t7 = zs["T7"]
        self.z_t1 = zs["T1"]
        # levels: name -> (z centre, y centre, body height, half width, half depth, disc below)
        self.levels = {n: (float(zs[n]), float(self.y_vb(zs[n])), *(float(d) for d in dims[n])) for n in names}

    def y_vb(self, z):
        """y of the vertebral-body axis at height z: thoracic kyphosis (most posterior at T7)."""
        t = (z - self.z_t7) / (self.z_t1 - self.z_t7)
        return self.y_spine + self.p["kyphosis"] * np.minimum(t * t, 1.3)

    def vb_dims(self, z):
        """Half width and half depth (mm) of the vertebral bodies at height z (interpolated)."""
        zs = np.array([v[0] for v in self.levels.values()])[::-1]
        a = np.array([v[3] for v in self.levels.values()])[::-1]
        b = np.array([v[4] for v in self.levels.values()])[::-1]
        dt = np.result_type(np.asarray(z).dtype, np.float32)
        return np.interp(z, zs, a).astype(dt), np.interp(z, zs, b).astype(dt)

    # ---- thoracic cavity (inner surface of the ribs) ------------------------------------------------
    def cavity(self, z):
        """(half width A, front depth, back depth, centre y, superellipse exponent) of the cavity at height z."""
        u = (self.z_apex - z) / self.H
        a_prof = np.where(u >= 0, 0.5 + 0.5 * np.sin(np.pi / 2 * np.clip(u / 0.72, 0, 1)) ** 0.6,
                          np.maximum(0.5 + 1.3 * u, 0.33))
        a_prof = a_prof * (1 - 0.12 * np.clip((u - 1.2) / 0.6, 0, 1))
        f_prof = np.where(u >= 0, 0.3 + 0.7 * np.sin(np.pi / 2 * np.clip(u / 0.55, 0, 1)),
                          np.maximum(0.3 + 0.5 * u, 0.25))
        b_prof = np.where(u >= 0, 0.78 + 0.22 * np.sin(np.pi / 2 * np.clip(u / 0.45, 0, 1)),
                          np.maximum(0.78 + 0.8 * u, 0.55))
        yc = self.y0 + 0.5 * (self.y_vb(z) - self.y_spine) + 8.0 * np.clip(-u, 0, 1)
        n = 2.0 + 0.5 * np.clip(u / 0.6, 0, 1)
        return self.A * a_prof, self.B_front * f_prof, self.B_back * b_prof, yc, n
