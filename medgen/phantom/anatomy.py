"""Thorax anatomy of the procedural phantom, as implicit functions of RAS+ world millimetres.

Every function takes broadcastable coordinate arrays ``x, y, z`` (mm; +x = patient's right, +y =
anterior, +z = superior), so the same anatomy can be evaluated on any voxel grid or on point lists:
the phantom is resolution independent. `sample_anatomy` draws the per-subject parameters (a
json-serialisable dict); `Thorax` turns them into geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medgen.findings import LABELS

RIGHT, LEFT = 1, -1  # side signs: the right lung lies at world x > 0 (RAS+)
CORTICAL_MM = 2.0  # cortical shell thickness of bones (at least 0.7 voxel, so coarse grids keep a rim)


@dataclass(frozen=True)
class Grid:
    """Axis-aligned voxel grid: voxel (i, j, k) sits at ``origin + (i, j, k) * spacing`` (world mm)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def from_affine(cls, shape, affine) -> "Grid":
        """Grid of an axis-aligned affine such as `medgen.volume.make_affine` builds."""
        affine = np.asarray(affine, dtype=float)
        return cls(tuple(int(s) for s in shape), tuple(float(s) for s in np.diag(affine)[:3]),
                   tuple(float(o) for o in affine[:3, 3]))

    @classmethod
    def covering(cls, lo, hi, spacing: float) -> "Grid":
        """Grid with isotropic `spacing` whose voxel centres cover the box [lo, hi] (mm)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        shape = np.ceil((hi - lo) / spacing).astype(int) + 1
        return cls(tuple(int(s) for s in shape), (spacing,) * 3, tuple(float(v) for v in lo))

    def axis(self, dim: int) -> np.ndarray:
        return self.origin[dim] + np.arange(self.shape[dim]) * self.spacing[dim]

    def coords(self, box=None):
        """Broadcastable float32 world coordinates ``x (X,1,1), y (1,Y,1), z (1,1,Z)``, optionally of a sub-box."""
        box = box or tuple(slice(0, n) for n in self.shape)
        x, y, z = (self.axis(d)[box[d]].astype(np.float32) for d in range(3))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def box(self, lo, hi):
        """Slices of the voxels whose centres lie in the world box [lo, hi]; None if it is empty."""
        sp, org = np.asarray(self.spacing), np.asarray(self.origin)
        i0 = np.maximum(np.ceil((np.asarray(lo) - org) / sp - 1e-9).astype(int), 0)
        i1 = np.minimum(np.floor((np.asarray(hi) - org) / sp + 1e-9).astype(int) + 1, self.shape)
        if np.any(i1 <= i0):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(i0, i1, strict=True))

    @property
    def voxel_mm(self) -> float:
        """Geometric-mean voxel size (mm): the scale of partial-volume edges."""
        return float(np.prod(self.spacing) ** (1.0 / 3.0))


def smooth_field(rng: np.random.Generator, grid: Grid, sigma_mm: float) -> np.ndarray:
    """Gaussian random field on `grid` (white noise smoothed by `sigma_mm`), zero mean, unit std."""
    field = gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32),
                            [sigma_mm / s for s in grid.spacing], mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def resample(field: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Trilinear resampling of `field` (on `src`) at the voxel centres of `dst` (edge values beyond)."""
    out = np.asarray(field, np.float32)
    for dim in range(3):
        pos = np.clip((dst.axis(dim) - src.origin[dim]) / src.spacing[dim], 0, src.shape[dim] - 1)
        i0 = np.minimum(np.floor(pos).astype(int), max(src.shape[dim] - 2, 0))
        w = (pos - i0).astype(np.float32).reshape([-1 if d == dim else 1 for d in range(3)])
        i1 = np.minimum(i0 + 1, src.shape[dim] - 1)
        out = np.take(out, i0, axis=dim) * (1 - w) + np.take(out, i1, axis=dim) * w
    return out


def segment_points(grid: Grid, segments, pad=0.0, chunk: int = 1 << 19):
    """Voxels near tube segments: yields ``(sid, flat, t, perp)`` chunks.

    For each segment (rows ``x0 y0 z0 x1 y1 z1 r0 r1``), the voxels of its bounding box padded by its
    largest radius + `pad` (mm, scalar or per segment): segment index, flat index into ``array.reshape(-1)``
    (boxes may overlap), position along the segment t in [0, 1] and the (M, 3) vector from the nearest axis
    point to the voxel centre.
    """
    segs = np.asarray(segments, dtype=float).reshape(-1, 8)
    sp, org, shape = np.asarray(grid.spacing), np.asarray(grid.origin), np.asarray(grid.shape)
    margin = (np.maximum(segs[:, 6], segs[:, 7]) + np.broadcast_to(np.asarray(pad, float), len(segs)))[:, None]
    lo = np.minimum(segs[:, :3], segs[:, 3:6]) - margin
    hi = np.maximum(segs[:, :3], segs[:, 3:6]) + margin
    i0 = np.clip(np.ceil((lo - org) / sp), 0, shape).astype(np.int64)
    n = np.maximum(np.clip(np.floor((hi - org) / sp).astype(np.int64) + 1, 0, shape) - i0, 0)
    count = n.prod(axis=1)
    groups = (np.cumsum(count) - count) // chunk
    for ids in np.split(np.arange(len(segs)), np.flatnonzero(np.diff(groups)) + 1):
        cnt = count[ids]
        if cnt.sum() == 0:
            continue
        sid = np.repeat(ids, cnt)
        local = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        ny, nz = n[sid, 1], n[sid, 2]
        ijk = i0[sid] + np.stack([local // (ny * nz), (local // nz) % ny, local % nz], axis=1)
        s = segs[sid]
        d = s[:, 3:6] - s[:, :3]
        v = org + ijk * sp - s[:, :3]
        t = np.clip(np.einsum("ij,ij->i", v, d) / np.maximum(np.einsum("ij,ij->i", d, d), 1e-9), 0.0, 1.0)
        flat = (ijk[:, 0] * shape[1] + ijk[:, 1]) * shape[2] + ijk[:, 2]
        yield sid, flat, t, v - t[:, None] * d


def tubes(grid: Grid, segments, chunk: int = 1 << 19):
    """Distance fields of tapered tubes, vectorised over segments: yields ``(flat, dist, radius)`` chunks.

    For every segment, the voxels of its bounding box (padded by one voxel): flat voxel index into
    ``array.reshape(-1)`` (repeats where boxes overlap), distance to the segment axis (mm) and the
    tube radius at the nearest axis point.

    Args:
        segments: (N, 8) rows ``x0, y0, z0, x1, y1, z1, r0, r1`` in mm (radius tapers r0 -> r1).
    """
    segs = np.asarray(segments, dtype=float).reshape(-1, 8)
    for sid, flat, t, perp in segment_points(grid, segs, pad=grid.voxel_mm, chunk=chunk):
        s = segs[sid]
        yield flat, np.linalg.norm(perp, axis=1), s[:, 6] + (s[:, 7] - s[:, 6]) * t


def partial_volume(dist, radius, voxel_mm: float):
    """Fraction of a voxel covered by a tube (linear edge ramp; thin tubes dim in proportion to width)."""
    return np.clip((radius - dist) / voxel_mm + 0.5, 0.0, 1.0) * np.minimum(1.0, 2.0 * radius / voxel_mm)


def polyline(points, radii) -> np.ndarray:
    """(N, 8) tube segments through `points` (list of xyz) with per-point `radii` (scalar or list)."""
    pts = np.asarray(points, float)
    rad = np.broadcast_to(np.asarray(radii, float), (len(pts),))
    return np.concatenate([pts[:-1], pts[1:], rad[:-1, None], rad[1:, None]], axis=1)


def sample_anatomy(rng: np.random.Generator) -> dict:
    """Per-subject anatomy parameters (mm unless noted), json-serialisable."""

    def u(lo, hi):
        return round(float(rng.uniform(lo, hi)), 3)

    size = u(0.93, 1.04)
    return {
        "size": size,
        "body_a": round(u(134, 146) * size, 3), "body_b": round(u(104, 116) * size, 3), "body_yc": u(-6, 4),
        "body_taper": u(-0.03, 0.02), "body_wobble": [[u(0, 0.008), u(0, 2 * np.pi)] for _ in range(3)],
        "back_flat": u(0.88, 0.95), "skin": u(1.5, 2.5), "fat": u(3, 14), "fat_lateral": u(0.1, 0.4),
        "fat_abdomen": u(0.1, 0.5), "muscle": u(5, 9), "pectoral": u(4, 12), "paraspinal": u(18, 28),
        "shoulder": u(10, 22), "rib_layer": u(8, 10),
        "med_x": u(-8, 0), "med_w": round(u(17, 23) * size, 3),
        "apex_z": u(105, 125), "apex_dz": u(-6, 6), "apex_h": u(70, 90),
        "dome_right": u(-62, -42), "dome_drop": u(6, 18), "dome_depth": u(38, 50),
        "fissure_post": u(0.56, 0.66), "fissure_ant": u(0.5, 0.68), "fissure_z_ant": u(0.08, 0.2),
        "fissure_tilt": u(-0.15, 0.15), "fissure_wave": [u(1, 5), u(25, 45), u(0, 2 * np.pi)],
        "horizontal": u(0.57, 0.64),
        "heart_axes": [round(u(50, 58) * size, 3), round(u(38, 44) * size, 3), round(u(32, 38) * size, 3)],
        "heart_dir": [u(-0.7, -0.45), u(0.45, 0.7), u(-0.6, -0.35)], "heart_dx": u(12, 24),
        "heart_dy": u(44, 54), "heart_dz": u(35, 45), "pericardial_fat": u(2, 6),
        "vb_r": u(15, 19), "vb_dy": u(18, 24), "vb_h": u(22, 27), "disc": u(4, 6.5), "vb_phase": u(0, 1),
        "rib_z0": u(110, 128), "rib_pitch": u(21, 25), "rib_drop": u(45, 70), "rib_a": u(3, 4),
        "rib_b": u(5, 7), "sternum_top": u(80, 100), "sternum_low": u(-85, -60),
        "trachea_r": u(8, 10.5), "carina_dz": u(80, 100), "aorta_r": u(13, 16), "arch_dz": u(18, 28),
        "pa_r": u(12, 15),
    }


class Thorax:
    """Implicit thorax geometry of one subject (see `sample_anatomy` for the parameters)."""

    def __init__(self, p: dict):
        self.p = p
        o = np.zeros(1)
        # Landmarks on the midline at z = 0: cavity front/back, vertebral body, trachea, carina.
        self.y_cav_ant = float(p["body_yc"] + self.cavity_radius(o + 1e-3, o + 200, o)[0])
        self.y_cav_post = float(p["body_yc"] - self.cavity_radius(o + 1e-3, o - 200, o)[0])
        self.y_vb = self.y_cav_post + p["vb_dy"]
        self.apex = {RIGHT: p["apex_z"] + p["apex_dz"] / 2, LEFT: p["apex_z"] - p["apex_dz"] / 2}
        self.dome = {RIGHT: p["dome_right"], LEFT: p["dome_right"] - p["dome_drop"]}
        self.y_t = self.y_vb + p["vb_r"] + 14 + p["trachea_r"]
        self.x_t = p["med_x"] + 2
        self.z_car = (self.apex[RIGHT] + self.apex[LEFT]) / 2 - p["carina_dz"]
        self.z_arch = self.z_car + p["arch_dz"]
        a = np.asarray(p["heart_dir"], float)
        e1 = a / np.linalg.norm(a)
        e2 = np.cross(e1, [0.0, 0.0, 1.0])
        e2 /= np.linalg.norm(e2)
        basis = np.stack([e1, e2, np.cross(e1, e2)])
        # v^T Q v = rho^2; plain floats keep float32 grids in float32 (NumPy scalars would upcast)
        self.heart_q = (basis.T @ np.diag(1.0 / np.asarray(p["heart_axes"], float) ** 2) @ basis).tolist()
        self.heart_c = (p["med_x"] - p["heart_dx"], self.y_cav_ant - p["heart_dy"], self.dome[LEFT] + p["heart_dz"])

    # ---- body wall -------------------------------------------------------------------------------
    def _polar(self, x, y):
        dy = y - self.p["body_yc"]
        r = np.hypot(x, dy)
        return r, np.arctan2(dy, x), np.arccos(np.clip(-dy / np.maximum(r, 1e-6), -1.0, 1.0))

    def body_radius(self, th, z):
        p = self.p
        scale = 1.0 + p["body_taper"] * z / 160.0
        ra = 1.0 / np.sqrt((np.cos(th) / p["body_a"]) ** 2 + (np.sin(th) / p["body_b"]) ** 2)
        wobble = 1.0 + sum(c * np.cos((n + 2) * th + ph) for n, (c, ph) in enumerate(p["body_wobble"]))
        flat = p["back_flat"] * p["body_b"] / np.maximum(-np.sin(th), 1e-3)
        return np.minimum(ra * wobble, flat) * scale

    def layers(self, th, phi, z):
        """Depths (mm from the skin along the ray from the body axis) where fat, muscle, ribs and cavity start."""
        p = self.p
        fat = p["fat"] * (1 + p["fat_lateral"] * np.cos(th) ** 2) * (
            1 + p["fat_abdomen"] * np.clip(-(z + 60.0) / 80.0, 0, 1))
        muscle = (p["muscle"] + p["paraspinal"] * np.exp(-((phi / 0.6) ** 2))
                  + p["pectoral"] * np.exp(-(((phi - 2.4) / 0.35) ** 2)) * np.clip((z + 20.0) / 40.0, 0, 1)
                  + p["shoulder"] * np.cos(th) ** 2 * np.clip((z - 30.0) / 90.0, 0, 1))
        fat_start = p["skin"]
        muscle_start = fat_start + fat
        rib_start = muscle_start + muscle
        return fat_start, muscle_start, rib_start, rib_start + p["rib_layer"]

    def cavity_radius(self, x, y, z):
        r, th, phi = self._polar(x, y)
        return self.body_radius(th, z) - self.layers(th, phi, z)[3]

    # ---- lungs -----------------------------------------------------------------------------------
    def med_half(self, y, z):
        """Half width of the mediastinum (mm) around x = med_x; narrow anteriorly, wider at the hila."""
        p = self.p
        w = p["med_w"] * (1 + 0.35 * np.exp(-(((z - self.z_car + 15) / 35.0) ** 2)))
        t = np.clip((y - self.y_vb) / (self.y_cav_ant - self.y_vb), 0, 1)
        return w * (1 - 0.5 * t**2)

    def diaphragm(self, x, y):
        """z (mm) of the diaphragm under each lung; domes peak mid-hemithorax, recesses run deeper."""
        p = self.p
        side = np.where(x > p["med_x"], RIGHT, LEFT)
        dome = np.where(side == RIGHT, self.dome[RIGHT], self.dome[LEFT]).astype(np.result_type(x))
        y_c = self.y_cav_post + 0.55 * (self.y_cav_ant - self.y_cav_post)
        q = ((x - p["med_x"] - side * (p["med_w"] + 40)) / 50.0) ** 2 + ((y - y_c) / 70.0) ** 2
        return dome - p["dome_depth"] * np.minimum(q, 1.1)

    def heart_rho(self, x, y, z):
        """Normalised ellipsoidal radius of the heart (< 1 inside)."""
        q, vx, vy, vz = self.heart_q, x - self.heart_c[0], y - self.heart_c[1], z - self.heart_c[2]
        rho2 = (q[0][0] * vx + 2 * q[0][1] * vy) * vx + q[1][1] * vy * vy  # in-plane part first (cheap on grids)
        return np.sqrt(rho2 + (2 * (q[0][2] * vx + q[1][2] * vy) + q[2][2] * vz) * vz)

    def lung_side(self, x, y, z, cav=None):
        """Side sign (+1 right, -1 left, 0 outside) of the lung containing each point."""
        p = self.p
        cav = self.cavity_radius(x, y, z) - self._polar(x, y)[0] if cav is None else cav
        side = np.where(x > p["med_x"], RIGHT, LEFT)
        apex = np.where(side == RIGHT, self.apex[RIGHT], self.apex[LEFT]).astype(np.result_type(x))
        t = np.clip((z - apex + p["apex_h"]) / p["apex_h"], 0, 1)
        y_ap = self.y_cav_post + 0.4 * (self.y_cav_ant - self.y_cav_post)
        rho_ap = np.hypot((x - p["med_x"] - side * (p["med_w"] + 45)) / 75.0, (y - y_ap) / 95.0)
        inside = ((cav > 1.5) & (np.abs(x - p["med_x"]) > self.med_half(y, z)) & (z > self.diaphragm(x, y))
                  & (rho_ap**2 < 1 - t)
                  & (self.heart_rho(x, y, z) > 1 + p["pericardial_fat"] / p["heart_axes"][2])
                  & (np.hypot(x / (p["vb_r"] * 1.15 + 7), (y - self.y_vb) / (p["vb_r"] + 7)) > 1)
                  & ((np.abs(x) > 44) | (y > self.y_vb - p["vb_r"] + 2)))  # vertebral arch
        return np.where(inside, side, 0)

    def lung_extent(self, side):
        """Nominal (z_low, z_high) of a lung: costophrenic recess to apex."""
        return self.dome[side] - 1.1 * self.p["dome_depth"], self.apex[side]

    def lobes(self, x, y, z, cav=None):
        """Lobe label (`LABELS`) of each point, 0 outside the lungs; oblique and right horizontal fissures."""
        p = self.p
        side = self.lung_side(x, y, z, cav)
        out = np.zeros(np.shape(side), np.uint8)
        for s, upper, middle, lower in ((RIGHT, "right_upper", "right_middle", "right_lower"),
                                        (LEFT, "left_upper", None, "left_lower")):
            z0, z1 = self.lung_extent(s)
            h = z1 - z0
            y_ant_f = self.y_cav_post + p["fissure_ant"] * (self.y_cav_ant - self.y_cav_post)
            zp, za = z0 + p["fissure_post"] * h, z0 + p["fissure_z_ant"] * h
            amp, lam, ph = p["fissure_wave"]
            z_obl = (zp + (za - zp) * (y - self.y_cav_post) / (y_ant_f - self.y_cav_post)
                     + p["fissure_tilt"] * (s * (x - p["med_x"]) - 60) + amp * np.sin(y / lam + ph))
            here = side == s
            low = z < z_obl
            out[here & low] = LABELS[lower]
            if middle is None:
                out[here & ~low] = LABELS[upper]
            else:
                z_hor = z0 + p["horizontal"] * h - 0.08 * (y - self.y_t)
                out[here & ~low & (z < z_hor)] = LABELS[middle]
                out[here & ~low & (z >= z_hor)] = LABELS[upper]
        return out

    # ---- tubular structures -------------------------------------------------------------------
    def hila(self):
        """World points where pulmonary arteries, veins and lobar bronchi enter each lung."""
        p, xm, yt, zc = self.p, self.p["med_x"], self.y_t, self.z_car
        w = p["med_w"] * 1.3
        return {
            "artery": {RIGHT: (xm + w + 8, yt - 2, zc - 22), LEFT: (xm - w - 8, yt - 6, zc - 14)},
            "vein": {RIGHT: (xm + w + 6, yt + 14, zc - 50), LEFT: (xm - w - 6, yt + 12, zc - 46)},
            "bronchus": {RIGHT: (self.x_t + 26, yt - 6, zc - 30), LEFT: (self.x_t - 42, yt - 8, zc - 28)},
        }

    def mediastinal_tubes(self) -> dict[str, np.ndarray]:
        """Great vessels, trachea and main bronchi, oesophagus: (N, 8) tube segments by structure."""
        p, xm, yt, zc, za = self.p, self.p["med_x"], self.y_t, self.z_car, self.z_arch
        hc, hil = self.heart_c, self.hila()
        ra, rv = p["aorta_r"], p["vb_r"]
        x_da = xm - 0.55 * rv - 0.8 * ra
        aorta = polyline([(hc[0] + 22, hc[1] + 5, hc[2] + 30), (xm + 14, yt + 32, za - 12), (xm, yt + 16, za + 6),
                          (x_da, self.y_vb + 6, za - 6), (x_da, self.y_vb + 8, self.dome[LEFT] - 10),
                          (xm - 4, self.y_vb + rv + 0.8 * ra, -200)], [ra, ra, 0.9 * ra, 0.8 * ra, 0.8 * ra, 0.75 * ra])
        top = za + 8
        branches = np.concatenate([polyline([(xm + dx, yt + dy, top), (xm + dx * 1.6, yt + dy, 200)], r)
                                   for dx, dy, r in ((10, 22, 6.5), (-6, 18, 5.5), (-18, 8, 5.5))])
        bif = (xm - 10, yt + 26, zc - 6)
        pulmonary = np.concatenate([
            polyline([(hc[0] + 6, hc[1] + 30, hc[2] + 30), bif], p["pa_r"]),
            polyline([bif, (xm + 8, yt + 8, zc - 14), hil["artery"][RIGHT]], 0.7 * p["pa_r"]),
            polyline([bif, (xm - 22, yt + 4, zc - 2), hil["artery"][LEFT]], 0.7 * p["pa_r"]),
            polyline([hil["vein"][RIGHT], (hc[0] + 20, hc[1] - 30, hc[2] + 15)], 7),
            polyline([hil["vein"][LEFT], (hc[0] - 5, hc[1] - 35, hc[2] + 15)], 7),
            polyline([(xm + 28, yt + 22, 200), (xm + 28, yt + 26, hc[2] + 25)], 10),  # superior vena cava
        ])
        rt = p["trachea_r"]
        airway = np.concatenate([
            polyline([(self.x_t, yt, 200), (self.x_t, yt - 4, zc)], rt),
            polyline([(self.x_t, yt - 4, zc), hil["bronchus"][RIGHT]], [0.8 * rt, 0.65 * rt]),
            polyline([(self.x_t, yt - 4, zc), hil["bronchus"][LEFT]], [0.75 * rt, 0.6 * rt]),
        ])
        oesophagus = polyline([(xm - 3, self.y_vb + rv + 7, 200), (xm - 14, self.y_vb + rv + 12, self.dome[LEFT] - 30)], 7)
        return {"vessels": np.concatenate([aorta, branches, pulmonary]), "airway": airway, "oesophagus": oesophagus}

    # ---- bones --------------------------------------------------------------------------------
    def bone_sdf(self, grid: Grid, phi, depth, rib_start):
        """Approximate signed distance (mm, < 0 inside) to bone, and to costal cartilage, on `grid`.

        Args:
            phi, depth, rib_start: wall fields of the grid (angle from the posterior midline, depth
                below the skin, depth where the rib layer starts), broadcastable to ``grid.shape``.
        """
        p, rv = self.p, self.p["vb_r"]
        sdf = np.full(grid.shape, np.inf, np.float32)
        cart = np.full(grid.shape, np.inf, np.float32)
        # vertebral bodies with discs, and the posterior arch with its spinous and transverse processes
        box = grid.box((-45, self.y_vb - rv - 60, -1e3), (45, self.y_vb + rv + 2, 1e3))
        if box is not None:
            x, y, z = grid.coords(box)
            h = p["vb_h"]
            dz = np.abs(z - p["vb_phase"] * h - np.round((z - p["vb_phase"] * h) / h) * h)
            vb = np.maximum((np.hypot(x / 1.15, y - self.y_vb) - rv), dz - (h - p["disc"]) / 2)
            yc = self.y_vb - rv - 9.0
            ring = np.maximum(np.abs(np.hypot(x, y - yc) - 12.0) - 3.5, y - (self.y_vb - rv + 2))
            spinous = np.maximum(np.abs(x) - 3.5, np.abs(y - (yc - 30.0)) - 16.0)
            transverse = np.maximum(np.abs(y - yc) - 4.0, np.abs(np.abs(x) - 24.0) - 14.0)
            arch = np.maximum(np.minimum(np.minimum(ring, spinous), transverse), dz - 0.32 * h)
            sdf[box] = np.minimum(vb, arch)
        # sternum: flat bar on the anterior midline, in the rib layer
        zs = grid.axis(2)
        ys = p["body_yc"] + self.body_radius(np.pi / 2, zs) - self.layers(np.pi / 2, np.pi, zs)[2] - p["rib_layer"] / 2
        box = grid.box((-30, ys.min() - 8, p["sternum_low"]), (30, ys.max() + 8, p["sternum_top"]))
        if box is not None:
            x, y, z = grid.coords(box)
            wide = 16 + 8 * np.clip((z - p["sternum_top"] + 30) / 30, 0, 1)
            st = (np.hypot(x / wide, (y - ys[box[2]][None, None, :]) / 6.0) - 1) * 6.0
            sdf[box] = np.minimum(sdf[box], np.maximum(st, np.maximum(z - p["sternum_top"], p["sternum_low"] - z)))
        # ribs: each rib drops anteriorly; nearest rib by index, elliptical cross-section (rib-layer voxels only)
        dr = np.broadcast_to(depth - (rib_start + p["rib_layer"] / 2), grid.shape)
        band = np.abs(dr) < p["rib_a"] + 2
        phi_b = np.broadcast_to(phi, grid.shape)[band]
        z_b = np.broadcast_to(grid.coords()[2], grid.shape)[band]
        zr = p["rib_z0"] - p["rib_drop"] * (1 - np.cos(phi_b)) / 2
        kr = np.clip(np.round((zr - z_b) / p["rib_pitch"]), 0, 11)
        rib = (np.hypot(dr[band] / p["rib_a"], (z_b - zr + kr * p["rib_pitch"]) / p["rib_b"]) - 1) * p["rib_a"]
        end = np.where(kr >= 10, 1.3 + 0.25 * (11 - kr), 2.3)  # bony end; floating ribs stop early
        sdf[band] = np.minimum(sdf[band], np.where((phi_b > 0.5) & (phi_b < end), rib, np.inf))
        cart[band] = np.where((phi_b >= end) & (phi_b < 2.95) & (kr < 10), rib, np.inf)
        return sdf, cart

    def clavicles(self) -> np.ndarray:
        """(N, 8) tube segments of both clavicles, from the sternal notch out to the shoulders."""
        p, zc = self.p, self.p["sternum_top"] + 10
        ya = self.y_cav_ant + p["rib_layer"] + 8
        return np.concatenate([polyline([(s * 18, ya, zc), (s * 70, ya - 8, zc + 8), (s * 125, ya - 40, zc + 18)], 7.0)
                               for s in (RIGHT, LEFT)])
