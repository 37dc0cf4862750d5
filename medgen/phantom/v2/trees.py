"""Bronchial, pulmonary-arterial and pulmonary-venous trees of phantom v2.

The central airway is named (Boyden): main bronchi, lobar bronchi, the bronchus intermedius, the right
upper-lobe trunk's apical, posterior and anterior segments (RB1-3), middle-lobe RB4-5, lower-lobe
superior (RB6) and basal (RB7-10) segments; on the left the upper division (LB1+2, LB3) and lingula
(LB4-5), and the lower lobe's LB6, LB7+8, LB9, LB10: 10 right and 8 left segmental bronchi. Each segmental
bronchus then branches toward points of its lobe's territory by recursive principal-axis splits, the
radius shrinking with the share of territory served (Murray-like exponent), until the lumen is below
`MIN_LUMEN_MM`; pulmonary arteries run beside the bronchi (bronchovascular bundles) from the hilar
arteries, one generation deeper; veins grow separately from the four pulmonary veins at the hila.
"""

from __future__ import annotations

import numpy as np

MIN_LUMEN_MM = 0.7
MURRAY = 2.6
# name: (parent, direction for the right lung (x mirrored on the left), length mm, lumen radius / trachea radius,
#        lobe, segmental?)
_RIGHT = {
    "RMB": (None, (0.45, -0.1, -0.89), 22, 0.72, None, False),
    "RUL": ("RMB", (0.95, -0.05, 0.3), 14, 0.55, "right_upper", False),
    "RB1": ("RUL", (0.25, -0.1, 0.96), 14, 0.36, "right_upper", True),
    "RB2": ("RUL", (0.45, -0.8, 0.35), 14, 0.36, "right_upper", True),
    "RB3": ("RUL", (0.4, 0.9, -0.1), 14, 0.36, "right_upper", True),
    "BI": ("RMB", (0.2, -0.1, -0.97), 26, 0.6, None, False),
    "RML": ("BI", (0.25, 0.85, -0.45), 14, 0.38, "right_middle", False),
    "RB4": ("RML", (0.8, 0.5, -0.3), 14, 0.32, "right_middle", True),
    "RB5": ("RML", (0.1, 0.9, -0.4), 14, 0.32, "right_middle", True),
    "RLL": ("BI", (0.1, -0.15, -0.98), 10, 0.55, "right_lower", False),
    "RB6": ("RLL", (0.25, -0.95, 0.15), 14, 0.36, "right_lower", True),
    "RBT": ("RLL", (0.1, -0.1, -1.0), 14, 0.42, "right_lower", False),
    "RB7": ("RBT", (-0.15, 0.2, -0.97), 14, 0.32, "right_lower", True),
    "RB8": ("RBT", (0.35, 0.65, -0.7), 16, 0.34, "right_lower", True),
    "RB9": ("RBT", (0.65, -0.05, -0.76), 16, 0.34, "right_lower", True),
    "RB10": ("RBT", (0.2, -0.65, -0.75), 16, 0.36, "right_lower", True),
}
_LEFT = {
    "LMB": (None, (0.7, -0.15, -0.7), 46, 0.66, None, False),
    "LUL": ("LMB", (0.75, 0.45, 0.35), 12, 0.55, "left_upper", False),
    "LUD": ("LUL", (0.4, 0.2, 0.9), 10, 0.40, "left_upper", False),
    "LB1+2": ("LUD", (0.3, -0.55, 0.8), 14, 0.36, "left_upper", True),
    "LB3": ("LUD", (0.35, 0.9, 0.1), 14, 0.36, "left_upper", True),
    "LING": ("LUL", (0.45, 0.6, -0.65), 12, 0.37, "left_upper", False),
    "LB4": ("LING", (0.75, 0.55, -0.3), 12, 0.32, "left_upper", True),
    "LB5": ("LING", (0.35, 0.65, -0.7), 12, 0.32, "left_upper", True),
    "LLL": ("LMB", (0.2, -0.15, -0.97), 12, 0.55, "left_lower", False),
    "LB6": ("LLL", (0.25, -0.95, 0.15), 14, 0.36, "left_lower", True),
    "LBT": ("LLL", (0.1, -0.1, -1.0), 14, 0.42, "left_lower", False),
    "LB7+8": ("LBT", (0.15, 0.65, -0.75), 16, 0.34, "left_lower", True),
    "LB9": ("LBT", (0.65, -0.05, -0.76), 16, 0.34, "left_lower", True),
    "LB10": ("LBT", (0.2, -0.65, -0.75), 16, 0.36, "left_lower", True),
}
SEGMENTAL = tuple(n for table in (_RIGHT, _LEFT) for n, v in table.items() if v[5])


class Branch:
    __slots__ = ("start", "end", "radius", "generation", "parent")

    def __init__(self, start, end, radius, generation, parent):
        self.start, self.end, self.radius, self.generation, self.parent = start, end, radius, generation, parent


def named_airways(carina, trachea_r: float, scale: float) -> dict[str, Branch]:
    """The named bronchi (trachea is generation 0) from the carina, lengths times `scale`."""
    out = {}
    for side, table in ((1, _RIGHT), (-1, _LEFT)):
        for name, (parent, direction, length, rel, _lobe, _seg) in table.items():
            d = np.array(direction, float) * [side, 1, 1]
            d /= np.linalg.norm(d)
            start = np.asarray(carina, float) if parent is None else out[parent].end
            gen = 1 if parent is None else out[parent].generation + 1
            out[name] = Branch(start, start + d * length * scale, rel * trachea_r, gen, out.get(parent))
    return out


def lobe_of_segment(name: str) -> str:
    return (_RIGHT.get(name) or _LEFT[name])[4]


def grow(rng, start, radius: float, generation: int, targets, min_radius: float, out: list, parent=None):
    """Branch from `start` toward `targets` (K, 3) by recursive two-way splits; appends Branch objects."""
    targets = np.asarray(targets, float)
    if not len(targets):
        return
    stack = [(np.asarray(start, float), radius, generation, targets, targets.mean(axis=0), parent)]
    while stack:
        p, r, gen, pts, c, par = stack.pop()
        n = len(pts)
        if n == 1 or r < min_radius:
            if np.linalg.norm(c - p) > 1.0:
                out.append(Branch(p, c, r, gen, par))
            continue
        d = pts - c
        axis = np.linalg.eigh(d.T @ d)[1][:, -1] if n > 3 else d[np.argmax((d * d).sum(axis=1))]
        order = np.argsort(d @ axis)
        k = int(np.clip(round(n * rng.uniform(0.35, 0.65)), 1, n - 1))
        steps = rng.uniform(0.35, 0.5, 2)
        for half, step in zip((pts[order[:k]], pts[order[k:]]), steps, strict=True):
            hc = half.mean(axis=0)
            q = p + (hc - p) * step
            rc = r * (len(half) / n) ** (1 / MURRAY)
            b = Branch(p, q, rc, gen + 1, par)
            out.append(b)
            stack.append((q, rc, gen + 1, half, hc, b))


def build_trees(S, M, rng: np.random.Generator, lobe_points: dict[str, np.ndarray], n_targets: int = 520):
    """Airway, artery and vein branches of one subject.

    Args:
        M: the subject's `Mediastinum` (carina, hilar arteries, pulmonary-vein ends).
        lobe_points: lobe name -> (K, 3) world points inside that lobe (territory samples).
    Returns:
        dict with lists of `Branch` under "airway", "artery", "vein".
    """
    scale = S.H / 206.0
    named = named_airways(M.carina, S.p["trachea_r"], scale)
    total = sum(len(v) for v in lobe_points.values())
    airway = list(named.values())
    seg_names = [n for n in SEGMENTAL if n in named]
    for lobe, pts in lobe_points.items():
        segs = [n for n in seg_names if lobe_of_segment(n) == lobe]
        k = max(len(segs), int(round(n_targets * len(pts) / max(total, 1))))
        pick = pts[rng.choice(len(pts), size=min(k, len(pts)), replace=False)] if len(pts) else pts
        if not len(pick):
            continue
        ends = np.array([named[n].end for n in segs])
        nearest = np.argmin(((pick[:, None, :] - ends[None]) ** 2).sum(-1), axis=1)
        for j, name in enumerate(segs):
            b = named[name]
            grow(rng, b.end, b.radius, b.generation, pick[nearest == j], MIN_LUMEN_MM, airway, b)
    artery = _arteries(S, M, airway, named)
    vein = []
    groups = {("right", "superior"): ("right_upper", "right_middle"), ("right", "inferior"): ("right_lower",),
              ("left", "superior"): ("left_upper",), ("left", "inferior"): ("left_lower",)}
    for key, lobes in groups.items():
        pts = np.concatenate([lobe_points[lb] for lb in lobes if len(lobe_points.get(lb, ()))] or [np.zeros((0, 3))])
        if not len(pts):
            continue
        k = min(len(pts), int(round(0.7 * n_targets * len(pts) / max(total, 1))))
        pick = pts[rng.choice(len(pts), size=k, replace=False)]
        grow(rng, M.pv_ends[key], 6.5, 1, pick, 0.9 * MIN_LUMEN_MM, vein)
    return {"airway": airway, "artery": artery, "vein": vein, "named": named}


def _arteries(S, M, airway, named):
    """Arteries beside every bronchus from the lobar level down, fed from the hilar arteries; the smallest
    bronchi get two arterial branches one generation deeper."""
    index = {id(b): i for i, b in enumerate(airway)}
    start = np.array([b.start for b in airway])
    end = np.array([b.end for b in airway])
    rad = np.array([b.radius for b in airway])
    par = np.array([index.get(id(b.parent), -1) for b in airway])
    d = end - start
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    u = np.cross(d, [0.35, 0.45, 0.82])
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-9)
    off = u * (2.3 * rad + 1.0)[:, None]
    side = np.cross(d, [0.0, 0.0, 1.0])
    side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-9)
    length = np.linalg.norm(end - start, axis=1)
    is_main = np.zeros(len(airway), bool)
    is_main[[index[id(named[n])] for n in ("RMB", "LMB", "BI")]] = True
    out = []
    for i, b in enumerate(airway):
        if is_main[i]:
            continue
        p = par[i]
        r_a = 1.3 * b.radius
        if p < 0 or is_main[p]:
            a0 = start[i] + off[i]
            out.append(Branch(M.hilum[1 if b.start[0] > M.carina[0] else -1], a0, r_a * 1.15, 2, None))
        else:
            a0 = end[p] + off[p]
        a1 = end[i] + off[i]
        out.append(Branch(a0, a1, r_a, b.generation, None))
        if b.radius < 1.2 * MIN_LUMEN_MM:  # one generation beyond the visible airway
            for sgn in (1, -1):
                tip = a1 + 0.6 * length[i] * d[i] + sgn * 0.3 * length[i] * side[i]
                out.append(Branch(a1, tip, 0.75 * r_a, b.generation + 1, None))
    return out


def segments(branches, radius_scale: float = 1.0, min_radius: float = 0.0) -> np.ndarray:
    """(N, 8) tube segments of branches whose radius is at least `min_radius`."""
    rows = [(*b.start, *b.end, b.radius * radius_scale, b.radius * radius_scale * 0.95)
            for b in branches if b.radius >= min_radius]
    return np.asarray(rows, float).reshape(-1, 8)


def generations(branches, min_radius: float = 0.0) -> int:
    """Deepest generation (trachea = 0) among branches of radius >= `min_radius`."""
    gens = [b.generation for b in branches if b.radius >= min_radius]
    return max(gens) if gens else 0
