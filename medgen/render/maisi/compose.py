"""What MAISI cannot draw, composed into its decoded HU (documented in docs/maisi.md), and NVIDIA's per-organ
HU check.

- **Lesion density** (`calibrate_lesions`): MAISI draws "lung tumor" with its own attenuation. Inside each
  lesion (a connected component of label 23) the HU are moved to the density target ``-750 + 800 d``: the
  rendered texture (HU minus its mean, its spread capped at `TEXTURE_STD_HU`) rides on the phantom's base
  (`medgen.phantom.lesions.lesion_hu`: uniform for ground glass and solid, a solid core in a ground-glass
  halo for part-solid, the core being the deepest voxels), then the mean is set to the target exactly.
- **Pleural effusion** (`paint_effusion`): the ControlNet sees the fluid as body (200, soft tissue), so MAISI
  shapes the lung edge around it; inside the fluid the HU become `EFFUSION_HU` plus Gaussian noise
  (correlation 0.8 voxel) whose spread is the rendered image's own noise, measured in soft tissue as the
  robust spread of (HU - local mean); the outer 2 mm blend with MAISI's pixels.
- **Emphysema** (`paint_emphysema`): the ControlNet sees the lobe; in the emphysematous region parenchyma
  (rendered HU < -700; vessels are kept) becomes ``EMPHYSEMA_HU + 0.5 (HU - median)``.
- **Per-organ HU check** (`quality_check`): NVIDIA's test on the raw decoded image: the median HU of each organ
  group must lie within ``[min(sigma_6_low, percentile_0_5), max(sigma_6_high, percentile_99_5)]`` of the
  download's real-CT statistics (bone: upper bound 1000 HU).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, label, uniform_filter

from medgen.phantom.lesions import lesion_hu
from medgen.volume import density_to_hu

TEXTURE_STD_HU = 40.0
EFFUSION_HU = 10.0
EMPHYSEMA_HU = -950.0
PARENCHYMA_MAX_HU = -700.0
HU_CLIP = (-1024.0, 3071.0)
# NVIDIA's organ groups for the HU check (label ids of MAISI's CT dictionary).
ORGAN_GROUPS = {
    "liver": [1], "spleen": [3], "pancreas": [4], "kidney": [5, 14], "lung": [28, 29, 30, 31, 32], "brain": [22],
    "hepatic tumor": [26], "bone lesion": [128], "lung tumor": [23], "colon cancer primaries": [27],
    "pancreatic tumor": [24], "bone": list(range(33, 57)) + list(range(63, 98)) + [120, 122, 127],
}


def lesion_components(labels: np.ndarray, lesion_id: int = 23) -> tuple[np.ndarray, int]:
    """(int32 component map, count) of the lesion label (26-connectivity)."""
    return label(labels == lesion_id, structure=np.ones((3, 3, 3)))


def calibrate_lesions(hu: np.ndarray, components: np.ndarray, targets_d: list[float], spacing) -> list[dict]:
    """Set each lesion component n (1-based, target density ``targets_d[n-1]``) to its HU target, in place."""
    out = []
    for n, d in enumerate(targets_d, start=1):
        mask = components == n
        if not mask.any():
            continue
        values = hu[mask].astype(np.float64)
        rendered = float(values.mean())
        texture = values - rendered
        std = float(texture.std())
        if std > TEXTURE_STD_HU:
            texture *= TEXTURE_STD_HU / std
        target = density_to_hu(float(d))
        core_frac, core_hu, rest_hu = lesion_hu(float(d))
        base = np.full(values.shape, rest_hu)
        if 0.0 < core_frac < 1.0:
            box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask))
            depth = distance_transform_edt(mask[box], sampling=spacing)[mask[box]]
            order = np.argsort(-depth, kind="stable")
            base[order[: int(round(core_frac * values.size))]] = core_hu
        new = np.clip(base + texture, *HU_CLIP)
        new = np.clip(new + (target - new.mean()), *HU_CLIP)
        hu[mask] = new
        out.append({"lesion": n, "target_density": float(d), "target_hu": round(target, 1),
                    "rendered_mean_hu": round(rendered, 1), "calibrated_mean_hu": round(float(new.mean()), 1),
                    "voxels": int(mask.sum())})
    return out


def image_noise_hu(hu: np.ndarray, tissue: np.ndarray) -> float:
    """Robust spread (1.4826 MAD) of HU minus its 3-voxel local mean over soft `tissue` (HU in [-150, 150])."""
    soft = tissue & (hu > -150) & (hu < 150)
    if soft.sum() < 100:
        return 10.0
    residual = (hu - uniform_filter(hu, size=3))[soft]
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def paint_effusion(hu: np.ndarray, fluid: np.ndarray, tissue: np.ndarray, spacing, seed: int) -> dict:
    """Pleural fluid at `EFFUSION_HU` with the image's own noise inside `fluid`, in place."""
    if not fluid.any():
        return {}
    box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in np.nonzero(fluid))
    sigma = image_noise_hu(hu, tissue)
    rng = np.random.default_rng([int(seed), 21])
    noise = gaussian_filter(rng.standard_normal(hu[box].shape).astype(np.float32), 0.8)
    noise *= sigma / max(float(noise.std()), 1e-6)
    inner = distance_transform_edt(fluid[box], sampling=spacing)
    weight = np.clip(inner / 2.0, 0.0, 1.0)
    region = hu[box]
    mask = fluid[box]
    region[mask] = (weight * (EFFUSION_HU + noise) + (1 - weight) * region)[mask]
    core = mask & (inner > 2.0)
    return {"method": "fluid HU + image-matched noise, conditioned as body (200)", "target_hu": EFFUSION_HU,
            "mean_hu": round(float(region[mask].mean()), 1),
            "core_std_hu": round(float(region[core].std()), 1) if core.any() else None,
            "image_noise_hu": round(sigma, 1), "voxels": int(mask.sum())}


def paint_emphysema(hu: np.ndarray, region: np.ndarray, lung: np.ndarray) -> dict:
    """Emphysematous parenchyma inside `region` darkened to `EMPHYSEMA_HU` (texture halved), in place; the
    fraction of `lung` below -950 HU before and after."""
    if not region.any():
        return {}
    before = float((hu[lung] < -950).mean()) if lung.any() else 0.0
    par = region & (hu < PARENCHYMA_MAX_HU)
    values = hu[par]
    if values.size:
        hu[par] = np.clip(EMPHYSEMA_HU + 0.5 * (values - np.median(values)), *HU_CLIP)
    after = float((hu[lung] < -950).mean()) if lung.any() else 0.0
    return {"method": "parenchyma HU painting", "target_hu": EMPHYSEMA_HU, "voxels": int(region.sum()),
            "lung_below_950_before": round(before, 4), "lung_below_950_after": round(after, 4)}


def quality_check(hu: np.ndarray, labels: np.ndarray, statistics: dict | None) -> dict:
    """NVIDIA's per-organ median-HU test: ``{organ: {median, low, high, ok}}`` for organs present and known
    to `statistics` (the download's image_median_statistics_ct.json); {} without statistics."""
    out = {}
    for organ, stats in (statistics or {}).items():
        ids = ORGAN_GROUPS.get(organ)
        if not ids:
            continue
        mask = np.isin(labels, ids)
        if not mask.any():
            continue
        low = min(stats["sigma_6_low"], stats["percentile_0_5"])
        high = 1000.0 if organ == "bone" else max(stats["sigma_6_high"], stats["percentile_99_5"])
        median = float(np.median(hu[mask]))
        out[organ] = {"median_hu": round(median, 1), "low": round(float(low), 1), "high": round(float(high), 1),
                      "ok": bool(low <= median <= high)}
    return out
