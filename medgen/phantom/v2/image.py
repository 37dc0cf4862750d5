"""Image formation of phantom v2: tissue HU, partial volume, tube overlays and CT noise.

Partial volume: every voxel is the mean of f^3 sub-samples (`supersampled`, f = 2 by default) of the
painted anatomy, and a bone sub-sample carries its cortical fraction (`geom.shell_fraction`), so a thin
cortex keeps its mean HU at any spacing; vessels and bronchi are blended with their analytic fractional
occupancy of each voxel. Labels are the most frequent label of the sub-samples.

Noise: stationary, zero mean, with the noise power spectrum of filtered back-projection,
NPS(f) ~ |f_xy| exp(-(|f_xy| / fc)^2) in plane (ramp times apodising kernel, fc = the subject's kernel
cutoff) times the slice profile along z; its standard deviation is ``noise_hu`` for a 1.25 mm
reconstruction, scaled to the grid by the share of the kernel's in-plane power below the grid's Nyquist
frequency and by sqrt(1.25 mm / slice spacing).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from medgen.phantom.anatomy import partial_volume
from medgen.phantom.v2.canvas import Canvas
from medgen.phantom.v2.geom import Grid, segment_points
from medgen.phantom.v2.labels import TISSUE_HU, TISSUES


def supersampled(grid: Grid, f: int) -> Grid:
    """The grid of f^3 sub-samples per voxel of `grid` (sub-sample centres tile each voxel)."""
    sp = np.asarray(grid.spacing)
    origin = np.asarray(grid.origin) - sp / 2 + sp / (2 * f)
    return Grid(tuple(int(n * f) for n in grid.shape), tuple(float(s) for s in sp / f),
                tuple(float(o) for o in origin))


def sample_hu_table(rng: np.random.Generator) -> dict[str, float]:
    return {k: round(float(rng.uniform(*v)), 1) for k, v in TISSUE_HU.items()}


def sample_hu(cv: Canvas, hu_table: dict) -> np.ndarray:
    """float32 HU of every sample: its tissue's HU; bone: trabecular + cortical fraction * (cortical - trabecular)."""
    lut = np.array([hu_table[name] for name in TISSUES], np.float32)
    hu = lut[cv.tissue]
    bone = cv.tissue == TISSUES["trabecular"]
    hu[bone] += cv.mix[bone] * np.float32(hu_table["cortical"] - hu_table["trabecular"])
    return hu


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a.astype(np.float32)
    X, Y, Z = (n // f for n in a.shape)
    return a.reshape(X, f, Y, f, Z, f).mean(axis=(1, 3, 5), dtype=np.float32)


def block_mode(labels: np.ndarray, f: int) -> np.ndarray:
    """Most frequent value of each f^3 block (ties: the first sub-sample's order)."""
    if f == 1:
        return labels.copy()
    X, Y, Z = (n // f for n in labels.shape)
    blocks = labels.reshape(X, f, Y, f, Z, f).transpose(0, 2, 4, 1, 3, 5).reshape(-1, f**3)
    best = blocks[:, 0].copy()
    mixed = np.flatnonzero(blocks.min(axis=1) != blocks.max(axis=1))
    if mixed.size:
        sub = blocks[mixed]
        counts = np.stack([(sub == sub[:, i : i + 1]).sum(axis=1) for i in range(f**3)], axis=1)
        best[mixed] = sub[np.arange(len(sub)), counts.argmax(axis=1)]
    return best.reshape(X, Y, Z)


def block_fraction(mask: np.ndarray, f: int) -> np.ndarray:
    return block_mean(mask.astype(np.float32), f)


def tube_fraction(grid: Grid, segments, grow: float = 0.0) -> np.ndarray:
    """Voxel fraction (0..1) covered by tube segments (N, 8) of radius + `grow` (max over overlapping tubes)."""
    return tube_fractions(grid, segments, (grow,))[0]


def tube_fractions(grid: Grid, segments, grows, scales=None) -> list[np.ndarray]:
    """`tube_fraction` for several radii at once (radius * scale + grow for each pair), one pass over the voxels."""
    scales = scales or (1.0,) * len(grows)
    out = [np.zeros(grid.shape, np.float32) for _ in grows]
    segs = np.asarray(segments, float).reshape(-1, 8)
    if len(segs):
        pad = max(max(grows), 0.0) + grid.voxel_mm + np.maximum(segs[:, 6], segs[:, 7]) * (max(scales) - 1)
        for sid, flat, t, perp in segment_points(grid, segs, pad=pad):
            s = segs[sid]
            rad = s[:, 6] + (s[:, 7] - s[:, 6]) * t
            dist = np.sqrt(np.einsum("ij,ij->i", perp, perp))
            for arr, grow, scale in zip(out, grows, scales, strict=True):
                frac = partial_volume(dist, rad * scale + grow, grid.voxel_mm).astype(np.float32)
                keep = frac > 0
                np.maximum.at(arr.reshape(-1), flat[keep], frac[keep])
    return out


def noise_sigma(spacing, noise_hu: float, cutoff: float) -> float:
    """Noise standard deviation (HU) on a grid of `spacing` (mm) for a 1.25 mm reconstruction of `noise_hu`."""
    nyq_xy = 0.5 / max(float(np.sqrt(spacing[0] * spacing[1])), 1e-6)
    in_plane = 1.0 - np.exp(-((nyq_xy / cutoff) ** 2))  # share of |f| exp(-(f/fc)^2) power below Nyquist
    reference = 1.0 - np.exp(-((0.4 / cutoff) ** 2))  # a 1.25 mm grid's share
    return float(noise_hu * np.sqrt(in_plane / reference * 1.25 / max(float(spacing[2]), 0.3)))


def ct_noise(rng: np.random.Generator, shape, spacing, sigma: float, cutoff: float) -> np.ndarray:
    """Zero-mean noise of std `sigma` with an FBP-like noise power spectrum (ramp x kernel in plane, slice profile
    along z), made by filtering white noise in the Fourier domain (single precision: 512^3 fits in ~2 GB)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    spec = sfft.rfftn(white)
    del white
    fx = np.fft.fftfreq(shape[0], spacing[0]).astype(np.float32)[:, None, None]
    fy = np.fft.fftfreq(shape[1], spacing[1]).astype(np.float32)[None, :, None]
    fz = np.fft.rfftfreq(shape[2], spacing[2]).astype(np.float32)[None, None, :]
    fr = np.sqrt(fx**2 + fy**2)
    slice_sigma = max(float(spacing[2]), 0.6) / 2.355
    spec *= np.sqrt(fr * np.exp(-((fr / cutoff) ** 2)))  # sqrt(NPS) is separable: in plane x along z
    spec *= np.exp(-((np.pi * slice_sigma * fz) ** 2)).astype(np.float32)
    noise = sfft.irfftn(spec, s=shape, axes=(0, 1, 2)).astype(np.float32, copy=False)
    noise -= noise.mean(dtype=np.float64)
    noise *= np.float32(sigma / max(float(noise.std(dtype=np.float64)), 1e-9))
    return noise
