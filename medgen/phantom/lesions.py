"""Findings of the procedural phantom: lesion shapes, HU and placement, pleural effusion, emphysema.

Lesion centres, the effusion level and the regional emphysema field are decided on a fixed 5 mm
planning grid in world millimetres, so a seed gives the same findings at every image resolution;
emphysema fractions are then matched exactly on the image grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from medgen.findings import LABELS, LOBES, Effusion, Emphysema, Lesion
from medgen.phantom.anatomy import LEFT, RIGHT, Grid, Thorax, partial_volume, smooth_field
from medgen.volume import density_to_hu

PLAN_MM = 5.0
SIDE_SIGN = {"right": RIGHT, "left": LEFT}
SIDE_LOBES = {name: [LABELS[lobe] for lobe in LOBES if lobe.startswith(name)] for name in SIDE_SIGN}
# fraction of that side's lung volume replaced by fluid, and emphysema (low-attenuation cluster,
# affected parenchyma) fractions of the lung, by grade
EFFUSION_FRACTION = {"small": (0.04, 0.08), "moderate": (0.16, 0.24), "large": (0.34, 0.44)}
EMPHYSEMA_FRACTION = {"mild": ((0.05, 0.08), 0.15), "moderate": ((0.15, 0.21), 0.25),
                      "severe": ((0.30, 0.38), 0.30)}
SOLID_HU, GGO_HU = 35.0, -690.0  # part-solid lesions: solid core and ground-glass halo
# A lesion larger than this fraction of its lobe's aerated volume cannot fit it: generation draws it clipped
# to the lobe (with a warning), an edit refuses it.
MAX_LOBE_FRACTION = 0.5


def lesion_volume_ml(diameter_mm: float) -> float:
    """Volume (ml) of a sphere of `diameter_mm` (a lesion's shape keeps that volume)."""
    return float(np.pi / 6 * float(diameter_mm) ** 3 / 1000.0)


def oversized(lesions, lobes: np.ndarray, fluid: np.ndarray, plan: Grid) -> list[float | None]:
    """Per lesion: its lobe's aerated volume (ml, on the planning grid `plan`) when the lesion is larger than
    `MAX_LOBE_FRACTION` of it, else None."""
    aerated = np.where(fluid, 0, lobes)
    voxel_ml = float(np.prod(plan.spacing)) / 1000.0
    out = []
    for lesion in lesions:
        lobe_ml = float((aerated == LABELS[lesion.lobe]).sum() * voxel_ml)
        out.append(lobe_ml if lesion_volume_ml(lesion.diameter_mm) > MAX_LOBE_FRACTION * lobe_ml else None)
    return out


def fibonacci_sphere(n: int = 400) -> np.ndarray:
    i = np.arange(n) + 0.5
    polar, azim = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    return np.stack([np.sin(polar) * np.cos(azim), np.sin(polar) * np.sin(azim), np.cos(polar)], axis=1)


@dataclass
class LesionShape:
    """Star-shaped core ``|v| < R(v/|v|)`` with the volume of a sphere of `radius`, plus thin spicules.

    R = radius * scale * (1 + u^T Q u) * (1 + sum_k a_k exp((u . n_k - 1) / w_k^2)): a traceless quadratic
    form (gentle ellipticity) and Gaussian bumps on the sphere (lobulation).
    """

    radius: float
    quad: np.ndarray  # (3, 3) traceless symmetric
    bumps: np.ndarray  # (K, 5): direction xyz, amplitude, width
    spikes: np.ndarray  # (S, 5): direction xyz, length (mm from the centre), base radius (mm)
    scale: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator, lesion: Lesion) -> "LesionShape":
        radius = lesion.diameter_mm / 2.0
        q = rng.normal(size=(3, 3))
        q = (q + q.T) / 2
        q -= np.eye(3) * np.trace(q) / 3
        q *= rng.uniform(0.04, 0.09) / max(np.abs(np.linalg.eigvalsh(q)).max(), 1e-6)
        n_bumps, n_spikes = {"smooth": (0, 0), "lobulated": (int(rng.integers(4, 8)), 0),
                             "spiculated": (int(rng.integers(2, 4)), int(rng.integers(10, 20)))}[lesion.margin]
        amp = (0.15, 0.35) if lesion.margin == "lobulated" else (0.04, 0.1)
        bumps = np.column_stack([_directions(rng, n_bumps), rng.uniform(*amp, n_bumps),
                                 rng.uniform(0.35, 0.55, n_bumps)])
        spikes = np.column_stack([_directions(rng, n_spikes), radius * rng.uniform(1.4, 2.1, n_spikes),
                                  np.full(n_spikes, max(1.0, 0.08 * radius))])
        shape = cls(radius, q, bumps, spikes)
        shape.scale = float(np.mean(shape.relative_radius(fibonacci_sphere()) ** 3) ** (-1 / 3))
        return shape

    def relative_radius(self, u):
        """R(u) / radius for unit vectors u (..., 3)."""
        rel = (1 + np.einsum("...i,ij,...j->...", u, self.quad, u)) * self.scale
        for b in self.bumps:
            rel = rel * (1 + b[3] * np.exp((u @ b[:3] - 1) / b[4] ** 2))
        return rel

    @property
    def r_max(self) -> float:
        """Largest core radius (mm); spicules reach further but are thin."""
        return float(self.radius * self.relative_radius(fibonacci_sphere()).max())

    def render(self, grid: Grid, centre):
        """Core mask, radial fraction |v|/R(u) and spicule partial-volume fraction in the lesion's box."""
        reach = self.radius * max([2.2] + list(self.spikes[:, 3] / self.radius + 0.1)) + grid.voxel_mm
        box = grid.box(np.asarray(centre) - reach, np.asarray(centre) + reach)
        if box is None:
            return None, None, None, None
        x, y, z = grid.coords(box)
        v = np.stack(np.broadcast_arrays(x - centre[0], y - centre[1], z - centre[2]), axis=-1)
        dist = np.linalg.norm(v, axis=-1)
        rel = dist / (self.radius * self.relative_radius(v / np.maximum(dist, 1e-6)[..., None]))
        spike = np.zeros(dist.shape)
        for s in self.spikes:
            t = v @ s[:3]
            perp = np.sqrt(np.maximum(dist**2 - t**2, 0))
            rad = np.where((t > 0) & (t < s[3]), s[4] * (1 - 0.8 * t / s[3]), 0.0)
            spike = np.maximum(spike, partial_volume(perp, rad, grid.voxel_mm))
        return box, rel < 1, rel, spike


def _depth(mask: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel of `mask` to the mask's boundary on the planning grid (< 0 outside)."""
    out = np.full(mask.shape, -PLAN_MM / 2, np.float32)
    idx = np.nonzero(mask)
    if idx[0].size:
        box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
        out[box] = distance_transform_edt(mask[box], sampling=PLAN_MM) - PLAN_MM / 2
    return out


def _directions(rng, n):
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def lesion_hu(density: float) -> tuple[float, float, float]:
    """(core volume fraction, core HU, rest HU) of a lesion whose mean must be ``density_to_hu(density)``.

    Ground glass (d < 1/3) and solid (d >= 2/3) lesions are uniform at the target; part-solid lesions
    have a solid core in a ground-glass halo, the core's volume fraction set so the mean hits the target.
    """
    target = density_to_hu(density)
    if density < 1 / 3:
        return 0.0, target, target
    if density >= 2 / 3:
        return 1.0, target, target
    return (target - GGO_HU) / (SOLID_HU - GGO_HU), SOLID_HU, GGO_HU


def place_lesions(rng, lesions, shapes, lobes: np.ndarray, fluid: np.ndarray, plan: Grid) -> list[dict]:
    """Centre of each lesion inside its lobe (`lobes` on the planning grid, `fluid` where effusion replaces lung).

    Upper-lobe lesions go in the upper half of that lung's aerated height, lower-lobe lesions in the lower
    half. Tiers, best first: 0, the whole core inside the aerated lobe (random position); 1-2, the point
    of the aerated lobe that keeps the core inside the aerated lung and deepest in the lobe (without, then
    with, overlap of earlier lesions); 3-4, anywhere in the lobe, inside the fluid if it took the lobe.
    """
    x, y, z = plan.coords()
    zz = np.broadcast_to(z, lobes.shape)
    aerated = np.where(fluid, 0, lobes)
    cache, placed, out = {}, [], []

    def depth(key, mask):
        if key not in cache:
            cache[key] = _depth(mask)
        return cache[key]

    for lesion, shape in zip(lesions, shapes, strict=True):
        label, name = LABELS[lesion.lobe], lesion.side
        side = np.isin(aerated, SIDE_LOBES[name])
        zs = zz[side] if side.any() else zz[np.isin(lobes, SIDE_LOBES[name])]
        mid, margin = (zs.min() + zs.max()) / 2, 0.05 * (zs.max() - zs.min())
        zone = {"upper": zz >= mid + margin, "lower": zz <= mid - margin}.get(lesion.zone, True)
        free = np.ones(lobes.shape, bool)
        for c, r in placed:
            free &= (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 > (r + shape.r_max + 3) ** 2
        need = shape.r_max + 2.5
        in_lobe = aerated == label
        d_lobe, d_side = depth(label, in_lobe), depth(name, side)
        tiers = [in_lobe & zone & free & (d_lobe >= need), in_lobe & zone & free, in_lobe & zone,
                 (lobes == label) & zone, lobes == label]
        tier = next((i for i, t in enumerate(tiers) if t.any()), None)
        if tier is None:
            raise ValueError(f"lobe {lesion.lobe!r} is empty in this subject's anatomy")
        idx = np.flatnonzero(tiers[tier])
        jitter = np.zeros(3)
        if tier == 0:
            pick = rng.choice(idx)
            jitter = rng.uniform(-0.4, 0.4, 3) * PLAN_MM
        else:
            score = np.minimum(d_side.ravel()[idx], need) + 0.25 * d_lobe.ravel()[idx]
            pick = rng.choice(idx[score >= score.max() - 1e-6])
        ijk = np.unravel_index(pick, lobes.shape)
        centre = np.array([plan.axis(d)[ijk[d]] for d in range(3)]) + jitter
        placed.append((centre, shape.r_max))
        out.append({"center_mm": [round(float(c), 2) for c in centre], "placement_tier": tier,
                    "clearance_mm": round(float(d_lobe[ijk]), 1), "r_max_mm": round(shape.r_max, 2)})
    return out


def effusion_score(thorax: Thorax, y, z, sign):
    """Gravity-dependent depth of a supine patient (posterior, then basal): fluid fills low scores first."""
    return y + 0.3 * (z - thorax.lung_extent(sign)[0])


def effusion_thresholds(rng, effusion: Effusion | None, thorax: Thorax, lobes: np.ndarray, plan: Grid) -> dict:
    """Score threshold per side so that the requested fraction of that lung's volume becomes fluid."""
    if effusion is None:
        return {}
    _, y, z = plan.coords()
    out = {}
    for name in (("left", "right") if effusion.side == "bilateral" else (effusion.side,)):
        sign = SIDE_SIGN[name]
        score = np.broadcast_to(effusion_score(thorax, y, z, sign), lobes.shape)[np.isin(lobes, SIDE_LOBES[name])]
        frac = float(rng.uniform(*EFFUSION_FRACTION[effusion.grade]))
        out[name] = {"fraction": round(frac, 4), "threshold": float(np.quantile(score, frac)),
                     "volume_ml": round(frac * score.size * PLAN_MM**3 / 1000, 1)}
    return out


def apply_effusion(thorax: Thorax, thresholds: dict, lobes: np.ndarray, grid: Grid) -> np.ndarray:
    """Boolean mask of pleural fluid on `grid` (subset of the `lobes` lung territory)."""
    _, y, z = grid.coords()
    fluid = np.zeros(lobes.shape, bool)
    for name, t in thresholds.items():
        score = effusion_score(thorax, y, z, SIDE_SIGN[name])
        fluid |= np.isin(lobes, SIDE_LOBES[name]) & (score < t["threshold"])
    return fluid


def emphysema_plan(rng, emphysema: Emphysema | None, lobes: np.ndarray, plan: Grid):
    """Regional emphysema field on the planning grid and the target fractions; None without emphysema.

    Upper-lobe predominance tilts the field upward. `apply_emphysema` adds fine texture on the image grid.
    """
    if emphysema is None:
        return None
    field = smooth_field(rng, plan, 10.0)
    if emphysema.upper_predominant:
        z = np.broadcast_to(plan.coords()[2], lobes.shape)[lobes > 0]
        field = field + 1.2 * (2 * (plan.coords()[2] - z.min()) / max(np.ptp(z), 1.0) - 1)
    (lo, hi), extra = EMPHYSEMA_FRACTION[emphysema.grade]
    p_cluster = float(rng.uniform(lo, hi))
    return field, {"cluster_fraction": round(p_cluster, 4), "affected_fraction": round(p_cluster + extra, 4)}


def apply_emphysema(info: dict, regional: np.ndarray, fine: np.ndarray, lung: np.ndarray):
    """(affected, cluster) masks: the top fractions of ``regional + 0.8 * fine`` over the `lung` voxels.

    Affected parenchyma is rendered at -950..-910 HU, clusters below -950 HU, so the fraction of lung
    below -950 HU follows the grade on every grid.
    """
    field = regional + 0.8 * fine
    values = field[lung]
    if values.size == 0:
        return lung, lung
    cut_a, cut_c = np.quantile(values, [1 - info["affected_fraction"], 1 - info["cluster_fraction"]])
    return lung & (field >= cut_a), lung & (field >= cut_c)


def paint_lesion(grid: Grid, shape, lesion: Lesion, hu: np.ndarray, space: np.ndarray, rng: np.random.Generator):
    """Paint one lesion into `hu` (in place) at its target mean HU: solid, part-solid (solid core in ground glass)
    or ground glass, only where `space` allows. Returns ``(box, mask)`` of the voxels it now owns, or None when
    the lesion falls outside the grid. Both phantoms draw lesions with it."""
    box, core, rel, spike = shape.render(grid, np.asarray(lesion.center_mm))
    if box is None:
        return None
    allowed = space[box]
    core = core & allowed
    spike = np.where(allowed & ~core, spike, 0.0)
    mask = core | (spike >= 0.5)
    sub = hu[box]
    frac, h_core, h_rest = lesion_hu(lesion.density)
    under = sub - (sub[core].mean() if core.any() else 0.0)  # ground glass keeps the lung's vessels faintly
    mottle = gaussian_filter(rng.standard_normal(core.shape).astype(np.float32), [1.5 / s for s in grid.spacing])
    mottle *= 6.0 / max(float(mottle.std()), 1e-6)
    inner = core & (rel < frac ** (1 / 3))
    sub += spike * (h_core - sub)
    sub[core] = h_rest + (0.45 * under[core] if frac < 1 else mottle[core])
    sub[inner] = h_core + mottle[inner]
    return box, mask
