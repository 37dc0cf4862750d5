"""Realism and diversity: generated vs real phantom volumes on features computable offline.

Features per volume:
* **intensity/texture statistics** (`intensity_features`): HU histogram, tissue-class fractions, lung
  HU percentiles, gradient and Laplacian magnitude (texture) inside the body;
* **noise power spectrum** (`noise_power_features`): the shape of the NPS of the detrended lung (share of power
  in radial frequency bands up to Nyquist) and its total power;
* **lung HU histogram** (`lung_histogram_features`): 25 bins over -1000..-500 HU;
* **learned features**: the image tower of the alignment model (trained only on real phantoms).

Distances between feature sets (standardised over all sets together): MONAI's unbiased
``MMDMetric`` (linear kernel) and the Fréchet distance.  Both are also computed between two *real*
sets (the same findings drawn on different subjects): that is the floor a perfect generator reaches.

Diversity: mean MS-SSIM (MONAI ``MultiScaleSSIMMetric``) between samples of one report (different
seeds) vs between real volumes with the same findings (different subjects).  A generated value well
above the real one means the model collapses to one volume per report.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy import linalg, ndimage

from medgen.volume import Volume, hu_to_intensity

__all__ = ["compare_feature_sets", "frechet_distance", "intensity_features", "lung_histogram_features", "mmd",
           "ms_ssim", "ms_ssim_settings", "noise_power_features", "pairwise_ms_ssim"]

HIST_EDGES = np.linspace(-1024.0, 1024.0, 25)
TISSUE_RANGES = {"air": (-1e9, -950), "lung": (-950, -500), "fat": (-150, -50), "soft": (-50, 150),
                 "bone": (150, 1e9)}


def intensity_features(volume: Volume) -> np.ndarray:
    """(38,) intensity and texture statistics of one HU volume (independent of grid size)."""
    hu = np.asarray(volume.array, dtype=np.float32)
    body = hu > -500
    body = ndimage.binary_fill_holes(body) if body.any() else np.ones_like(body)
    inside = hu[body]
    hist, _ = np.histogram(np.clip(hu, -1024, 1023), bins=HIST_EDGES)
    fractions = [np.mean((inside >= lo) & (inside < hi)) for lo, hi in TISSUE_RANGES.values()]
    lung = inside[(inside > -1000) & (inside < -500)]
    lung_pct = np.percentile(lung, [10, 50, 90]) / 1000.0 if lung.size else np.zeros(3)
    spacing = np.asarray(volume.spacing)
    grad = np.sqrt(sum(np.gradient(hu, *spacing)[i] ** 2 for i in range(3)))[body] / 100.0
    lap = np.abs(ndimage.laplace(hu))[body] / 1000.0
    texture = [grad.mean(), grad.std(), np.percentile(grad, 90), lap.mean(), lap.std()]
    return np.concatenate([hist / hu.size, fractions, lung_pct, [body.mean()], texture]).astype(np.float64)


NPS_BANDS = 6
LUNG_EDGES = np.linspace(-1000.0, -500.0, 26)


def _lung_mask(hu: np.ndarray) -> np.ndarray:
    """Aerated lung: -1000 < HU < -500, eroded by one voxel so edges with the chest wall do not count as noise."""
    return ndimage.binary_erosion((hu > -1000) & (hu < -500))


def noise_power_features(volume: Volume) -> np.ndarray:
    """(NPS_BANDS + 1,) share of the lung's noise power in radial frequency bands (0 to Nyquist) and log10 of its
    total power per voxel. The lung is detrended (minus a 2-voxel Gaussian) so anatomy does not count as noise."""
    hu = np.asarray(volume.array, dtype=np.float32)
    mask = _lung_mask(hu)
    if mask.sum() < 64:
        return np.zeros(NPS_BANDS + 1)
    detrended = np.where(mask, hu - ndimage.gaussian_filter(hu, 2.0), 0.0)
    power = np.abs(np.fft.fftn(detrended)) ** 2 / mask.sum()
    radius = np.sqrt(sum(np.fft.fftfreq(n)[tuple(slice(None) if d == i else None for d in range(3))] ** 2
                         for i, n in enumerate(hu.shape)))  # cycles per voxel; Nyquist 0.5
    band = np.minimum((radius / 0.5 * NPS_BANDS).astype(int), NPS_BANDS - 1)
    per_band = np.bincount(band.ravel(), weights=power.ravel(), minlength=NPS_BANDS)[:NPS_BANDS]
    total = per_band.sum()
    return np.concatenate([per_band / max(total, 1e-12), [np.log10(max(total / hu.size, 1e-12))]])


def lung_histogram_features(volume: Volume) -> np.ndarray:
    """(25,) normalised histogram of the aerated lung's HU (-1000..-500)."""
    hu = np.asarray(volume.array, dtype=np.float32)
    hist, _ = np.histogram(hu[_lung_mask(hu)], bins=LUNG_EDGES)
    return hist / max(hist.sum(), 1)


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, F) and b (M, F)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False)) + eps * np.eye(a.shape[1])
    cov_b = np.atleast_2d(np.cov(b, rowvar=False)) + eps * np.eye(a.shape[1])
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean)))


def mmd(a: np.ndarray, b: np.ndarray) -> float:
    """MONAI unbiased MMD (linear kernel) between equally many samples of a and b (truncated to the smaller)."""
    from monai.metrics import MMDMetric

    n = min(len(a), len(b))
    if n < 2:
        raise ValueError(f"MMD needs at least 2 samples per set, got {len(a)} and {len(b)}")
    y = torch.as_tensor(a[:n], dtype=torch.float64)[:, None]
    y_pred = torch.as_tensor(b[:n], dtype=torch.float64)[:, None]
    return float(MMDMetric()(y, y_pred))


def compare_feature_sets(real: np.ndarray, generated: np.ndarray, real_b: np.ndarray | None = None) -> dict:
    """Standardise every feature over all sets together, then MMD and Fréchet real vs generated (and real vs real_b).

    Pooled standardisation keeps a feature that is constant among the real volumes but not among the
    generated ones from dominating with a near-zero denominator.
    """
    sets = [np.asarray(x, dtype=np.float64) for x in (real, generated) + (() if real_b is None else (real_b,))]
    pooled = np.concatenate(sets, 0)
    mu, sd = pooled.mean(0), pooled.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    z = [(x - mu) / sd for x in sets]
    out = {"n_real": len(real), "n_generated": len(generated), "n_features": int(pooled.shape[1]),
           "mmd": mmd(z[0], z[1]), "frechet": frechet_distance(z[0], z[1])}
    if real_b is not None:
        out["mmd_real_vs_real"] = mmd(z[0], z[2])
        out["frechet_real_vs_real"] = frechet_distance(z[0], z[2])
    return out


def ms_ssim_settings(size: int) -> dict:
    """Kernel and scale weights that fit a cube of side `size` (MONAI checks size // (n-1)^2 > kernel - 1)."""
    base = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    for min_scales, min_kernel in ((3, 7), (2, 3)):  # prefer >= 3 scales with a kernel >= 7
        for kernel in (k for k in (11, 9, 7, 5, 3) if k >= min_kernel):
            for n in (s for s in (5, 4, 3, 2) if s >= min_scales):
                if size // (n - 1) ** 2 > kernel - 1 and size // 2 ** (n - 1) >= kernel:
                    w = np.asarray(base[:n]) / sum(base[:n])
                    return {"kernel_size": kernel, "weights": tuple(float(x) for x in w)}
    raise ValueError(f"volumes of side {size} are too small for MS-SSIM (need >= 6 voxels)")


def _unit(volume: Volume) -> torch.Tensor:
    """HU -> [0, 1] on the network window, (1, 1, X, Y, Z)."""
    x = torch.as_tensor(np.asarray(volume.array, dtype=np.float32))
    return ((hu_to_intensity(x) + 1.0) / 2.0)[None, None]


def ms_ssim(a: Volume, b: Volume) -> float:
    """MS-SSIM in [0, 1] between two volumes on the same grid (data range 1 after windowing)."""
    from monai.metrics import MultiScaleSSIMMetric

    if a.shape != b.shape:
        raise ValueError(f"MS-SSIM needs volumes on the same grid, got {a.shape} and {b.shape}")
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, **ms_ssim_settings(min(a.shape)))
    return float(metric(_unit(a), _unit(b)).mean())


def pairwise_ms_ssim(groups: Sequence[Sequence[Volume]]) -> dict:
    """Mean / sd of MS-SSIM over all pairs inside each group (e.g. the samples of one report)."""
    values = [ms_ssim(a, b) for group in groups for a, b in itertools.combinations(group, 2)]
    if not values:
        raise ValueError("pairwise MS-SSIM needs at least one group of two volumes")
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n_pairs": len(values)}
