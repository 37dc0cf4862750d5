"""The resolution cascade: x2 per stage over the same field of view, tile by tile in bounded memory.

A stage maps an HU volume on one grid to the grid with twice the voxels per axis (half the spacing). Every
stage runs on tiles with a halo of input voxels on each side, and keeps only the tile's own output
voxels: an operation whose reach is within the halo then gives exactly what it would give on the whole
volume, so tiles leave no seam, and the working memory is one tile, not the volume.

`TrilinearStage` is the baseline every learned refiner is measured against (it adds no detail: edges
blur with each stage). Label maps follow by nearest neighbour (`upsample_labels`), so each output voxel keeps
the label of the native voxel it lies in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

DEFAULT_TILE = 48  # input voxels per axis per piece: ~100 MB of activations for a 16-channel refiner


def tilewise(fn: Callable[[torch.Tensor], torch.Tensor], volume: np.ndarray, *, factor: int = 2,
             halo: int = 2, tile: int = DEFAULT_TILE, progress: bool = False, desc: str = "refine") -> np.ndarray:
    """Apply `fn` ((1, 1, x, y, z) float tensor -> (1, 1, factor*x, factor*y, factor*z)) to `volume` (X, Y, Z)
    tile by tile (`tile` input voxels per axis) with `halo` input voxels of context on every side, keeping
    each tile's own output voxels; returns float32 (factor*X, factor*Y, factor*Z)."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    out = np.empty(tuple(factor * s for s in volume.shape), dtype=np.float32)
    corners = list(itertools.product(*(range(0, size, tile) for size in volume.shape)))
    for corner in tqdm(corners, desc=desc, unit="tile", disable=not progress, leave=False):
        stop = [min(size, c + tile) for c, size in zip(corner, volume.shape, strict=True)]
        lo = [max(0, c - halo) for c in corner]
        hi = [min(size, e + halo) for e, size in zip(stop, volume.shape, strict=True)]
        piece = volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        with torch.no_grad():
            result = fn(torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32))[None, None])[0, 0]
        keep = tuple(slice(factor * (c - low), factor * (e - low)) for c, e, low in zip(corner, stop, lo, strict=True))
        target = tuple(slice(factor * c, factor * e) for c, e in zip(corner, stop, strict=True))
        out[target] = result[keep].cpu().numpy()
    return out


class TrilinearStage:
    """x2 trilinear interpolation (half-voxel aligned, as ``align_corners=False``): the no-detail baseline."""

    name = "trilinear"
    halo = 1

    def __call__(self, hu: np.ndarray, *, progress: bool = False, context=None) -> np.ndarray:
        def up(x):
            return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)

        return tilewise(up, hu, factor=2, halo=self.halo, tile=64, progress=progress, desc=self.name)


def run_cascade(hu: np.ndarray, stages: Sequence, spacing, *, progress: bool = False,
                context=None) -> tuple[np.ndarray, list[str]]:
    """Run `stages` in order on `hu` (X, Y, Z) at `spacing` mm; returns the final HU volume and one line per
    stage (what ran, the grid it delivered) for the sidecar."""
    names = [f"render {'x'.join(map(str, hu.shape))} @ {_mm(spacing)} mm"]
    for stage in stages:
        hu = stage(hu, progress=progress, context=context)
        spacing = tuple(s / 2 for s in spacing)
        names.append(f"{stage.name} x2 -> {'x'.join(map(str, hu.shape))} @ {_mm(spacing)} mm")
    return hu, names


def refine_batch(hu: np.ndarray, n_stages: int, spacing, *, stages: Sequence | None = None,
                 progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """`run_cascade` over a batch (B, X, Y, Z) with `n_stages` stages (default: `TrilinearStage` each)."""
    stages = list(stages) if stages is not None else [TrilinearStage() for _ in range(n_stages)]
    if len(stages) != n_stages:
        raise ValueError(f"{n_stages} refinement stage(s) requested but {len(stages)} given")
    if not n_stages:
        return hu, run_cascade(hu[0], (), spacing)[1]
    refined = [run_cascade(volume, stages, spacing, progress=progress) for volume in hu]
    return np.stack([r[0] for r in refined]), refined[0][1]


def upsample_label_volume(labels, factor: int, affine):
    """A label `Volume` on the native grid -> the same labels on the grid `factor` times finer (`affine`)."""
    from medgen.volume import Volume

    if factor == 1:
        return labels
    return Volume(upsample_labels(np.asarray(labels.array), factor), np.asarray(affine, float).copy(),
                  dict(labels.meta))


def upsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour x`factor` per axis: every output voxel keeps its native voxel's label."""
    out = labels
    for axis in range(3):
        out = np.repeat(out, factor, axis=axis)
    return out


def _mm(spacing) -> str:
    return "x".join(f"{s:g}" for s in spacing)
