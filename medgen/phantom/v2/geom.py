"""Geometric primitives of phantom v2, evaluated on broadcastable world-mm coordinate arrays.

Shapes are pseudo signed distances (mm, < 0 inside) so that they can be combined with min/max and
inflated by a margin. Tubes along polylines are evaluated only in the bounding boxes of their segments
(`segment_points`), so thousands of vessel segments cost what their boxes hold, not the whole grid.
"""

from __future__ import annotations

import numpy as np

from medgen.phantom.anatomy import Grid, polyline, segment_points

__all__ = ["Grid", "polyline", "spline", "ellipsoid_sdf", "capsule_sdf", "segment_points", "frame",
           "shell_fraction"]


def spline(points, n: int = 24) -> np.ndarray:
    """(n, 3) points of a Catmull-Rom curve through control `points` (ends included), spaced by arc length."""
    pts = np.asarray(points, float)
    if len(pts) < 3:
        return np.linspace(pts[0], pts[-1], n)
    ext = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    seg_len = np.maximum(np.linalg.norm(np.diff(pts, axis=0), axis=1), 1e-9)
    s = np.concatenate([[0], np.cumsum(seg_len)])
    t = np.linspace(0, s[-1], n)
    i = np.clip(np.searchsorted(s, t, side="right") - 1, 0, len(pts) - 2)
    f = ((t - s[i]) / seg_len[i])[:, None]
    p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
    return 0.5 * ((2 * p1) + (-p0 + p2) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f**2
                  + (-p0 + 3 * p1 - 3 * p2 + p3) * f**3)


def frame(axis) -> np.ndarray:
    """(3, 3) orthonormal rows: the unit `axis` and two unit vectors perpendicular to it."""
    e1 = np.asarray(axis, float)
    e1 = e1 / np.linalg.norm(e1)
    ref = np.array([0.0, 0.0, 1.0]) if abs(e1[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e2 = np.cross(e1, ref)
    e2 /= np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)])


def ellipsoid_sdf(x, y, z, centre, axes, rows=None):
    """Pseudo signed distance (mm) to an ellipsoid with semi-axes `axes` along the unit vectors `rows`
    (default the world axes): (rho - 1) * smallest semi-axis, rho the normalised radius."""
    cx, cy, cz = (float(c) for c in centre)
    axes = [float(a) for a in axes]
    dx, dy, dz = x - cx, y - cy, z - cz
    if rows is None:
        rho2 = (dx / axes[0]) ** 2 + (dy / axes[1]) ** 2 + (dz / axes[2]) ** 2
    else:
        rho2 = 0.0
        for row, ax in zip(rows, axes, strict=True):
            r0, r1, r2 = (float(v) for v in row)
            rho2 = rho2 + ((r0 * dx + r1 * dy + r2 * dz) / ax) ** 2
    return (np.sqrt(rho2) - 1.0) * float(min(axes))


def capsule_sdf(x, y, z, a, b, r0, r1=None):
    """Signed distance (mm) to a tapered capsule from point `a` (radius r0) to `b` (radius r1)."""
    r0 = float(r0)
    r1 = r0 if r1 is None else float(r1)
    ax, ay, az = (float(v) for v in a)
    d0, d1, d2 = float(b[0]) - ax, float(b[1]) - ay, float(b[2]) - az
    dd = (d0 * d0 + d1 * d1 + d2 * d2) or 1e-9
    vx, vy, vz = x - ax, y - ay, z - az
    t = np.clip((vx * d0 + vy * d1 + vz * d2) * (1.0 / dd), 0.0, 1.0)
    dist = np.sqrt((vx - t * d0) ** 2 + (vy - t * d1) ** 2 + (vz - t * d2) ** 2)
    return dist - (r0 + (r1 - r0) * t)


def shell_fraction(sdf, thickness: float, step: float):
    """Cortical fraction of a bone sample of size `step` (mm) whose centre lies at depth `sdf` (<= 0) in a bone
    with a cortex of `thickness`: the share of the sample's extent [sdf - step/2, sdf + step/2] that lies in the
    shell. Samples tile space, so the painted bone ends at the outermost sample's extent, up to half a step
    inside the surface (gap g); the shell is taken as the `thickness` below that painted edge, [-t - g, -g], so
    a thin cortex keeps its volume, and the bone its mean HU, at any sampling."""
    h = float(step)
    outermost = sdf + h * np.floor(-sdf / h)  # the outermost sample on this sample's line, in (-h, 0]
    g = np.maximum(-(outermost + h / 2), 0.0)
    overlap = np.minimum(sdf + h / 2, -g) - np.maximum(sdf - h / 2, -thickness - g)
    return np.clip(overlap / h, 0.0, 1.0).astype(np.float32)


