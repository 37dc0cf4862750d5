"""Tiled (sliding-window) encoding and decoding with the KL autoencoder, for volumes too large for memory.

Tiles overlap and are blended with raised-cosine weights: along each axis a tile's weight ramps
smoothly from ~0 to 1 over ``overlap`` voxels on every side that has a neighbouring tile, and stays 1
on sides that touch the volume border.  The accumulated sum is divided by the accumulated weight, so
the result is a partition-of-unity blend with no visible seams.  When a single tile covers an axis the
weights are exactly 1 and nothing is tapered, so ``tile >= size`` reproduces a plain encode/decode.

Conventions:
* `encode_tiled`: ``tile`` / ``overlap`` in IMAGE voxels; both (and the image size) must be multiples of
  the autoencoder's downsampling factor so that tile origins fall on the latent grid.
* `decode_tiled`: ``tile`` / ``overlap`` in LATENT voxels.
* ``tile`` / ``overlap`` are an int (all axes) or one value per spatial axis.
* No ``torch.no_grad`` is imposed: call these under ``torch.inference_mode()`` for inference.
* The latent scale factor is not applied here (callers multiply/divide by it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["encode_tiled", "decode_tiled", "tile_starts", "blend_weights_1d"]


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (int(value),) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"`{name}` must be an int or have {ndim} values, got {value}")
    return value


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Origins of the tiles along one axis: stride ``tile - overlap``, the last tile flush with the end.

    All origins are multiples of `align` (provided `size`, `tile` and `overlap` are).  ``tile >= size``
    gives one tile at 0 (the tile is then clipped to `size`).
    """
    if tile >= size:
        return [0]
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    if align > 1 and any(s % align for s in starts):
        raise ValueError(
            f"tile origins {starts} are not multiples of {align}; use sizes/tiles/overlaps divisible by {align}"
        )
    return starts


def blend_weights_1d(length: int, ramp: int, taper_start: bool, taper_end: bool) -> torch.Tensor:
    """1D blending weights: 1 inside, raised-cosine ramps of `ramp` voxels on the tapered sides (never 0)."""
    w = torch.ones(length, dtype=torch.float64)
    ramp = min(ramp, length // 2) if (taper_start and taper_end) else min(ramp, length)
    if ramp > 0:
        i = torch.arange(ramp, dtype=torch.float64)
        up = 0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / ramp)  # in (0, 1); up[i] + up[ramp-1-i] == 1
        if taper_start:
            w[:ramp] = torch.minimum(w[:ramp], up)
        if taper_end:
            w[length - ramp :] = torch.minimum(w[length - ramp :], up.flip(0))
    return w


def _tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: tuple[int, ...],
    overlap: tuple[int, ...],
    up: int,
    down: int,
) -> torch.Tensor:
    """Apply `fn` tile by tile; `fn` maps spatial size n to n * up / down. Blends the outputs."""
    spatial = tuple(x.shape[2:])
    nd = len(spatial)
    if any(s * up % down for s in spatial):
        raise ValueError(f"spatial size {spatial} must be divisible by {down}")
    tile = tuple(min(t, s) for t, s in zip(tile, spatial, strict=True))
    starts = [tile_starts(s, t, o, align=down) for s, t, o in zip(spatial, tile, overlap, strict=True)]
    out_spatial = tuple(s * up // down for s in spatial)
    out_tile = tuple(t * up // down for t in tile)
    out_ramp = tuple(o * up // down for o in overlap)

    out: torch.Tensor | None = None
    weight_sum = torch.zeros((1, 1, *out_spatial), dtype=torch.float32, device=x.device)
    axis_weights = [
        {
            s: blend_weights_1d(ot, r, taper_start=(j > 0), taper_end=(j < len(st) - 1))
            for j, s in enumerate(st)
        }
        for st, ot, r in zip(starts, out_tile, out_ramp, strict=True)
    ]
    for origin in _product(starts):
        sl_in = tuple(slice(o, o + t) for o, t in zip(origin, tile, strict=True))
        y = fn(x[(slice(None), slice(None), *sl_in)]).float()
        if out is None:
            out = torch.zeros((y.shape[0], y.shape[1], *out_spatial), dtype=torch.float32, device=x.device)
        w = torch.ones((), dtype=torch.float64)
        for axis, o in enumerate(origin):
            shape = [1] * nd
            shape[axis] = -1
            w = w * axis_weights[axis][o].reshape(shape)
        w = w.to(device=x.device, dtype=torch.float32)[None, None]
        sl_out = tuple(
            slice(o * up // down, o * up // down + t) for o, t in zip(origin, out_tile, strict=True)
        )
        out[(slice(None), slice(None), *sl_out)] += y * w
        weight_sum[(slice(None), slice(None), *sl_out)] += w
    assert out is not None
    return out / weight_sum


def _product(lists: list[list[int]]):
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for rest in _product(lists[1:]):
            yield (head, *rest)


def _downsample_factor(autoencoder) -> int:
    """2 ** (number of levels - 1) of a MONAI AutoencoderKL (from its encoder's channels)."""
    channels = getattr(autoencoder.encoder, "channels", None)
    if channels is None:  # pragma: no cover - older MONAI
        raise ValueError("cannot infer the autoencoder's downsampling factor")
    return 2 ** (len(channels) - 1)


def encode_tiled(
    autoencoder,
    x: torch.Tensor,
    *,
    tile: int | Sequence[int],
    overlap: int | Sequence[int],
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Encode an image (B, C, *S) to its latent (B, latent_channels, *S/f) tile by tile.

    Returns the posterior mean, or (``sample=True``) a sample ``mu + sigma * eps`` where mu and sigma
    are blended first and eps is drawn over the whole latent (from `generator` on the CPU, then moved,
    so a seed gives the same draw on every device).  `tile` / `overlap` are in image voxels and must be
    multiples of the downsampling factor f.
    """
    nd = x.ndim - 2
    f = _downsample_factor(autoencoder)
    tile_t = _per_axis(tile, nd, "tile")
    overlap_t = _per_axis(overlap, nd, "overlap")
    for name, vals in (("tile", tile_t), ("overlap", overlap_t)):
        if any(v % f for v in vals):
            raise ValueError(f"`{name}` {vals} must be a multiple of the downsampling factor {f}")

    def fn(t: torch.Tensor) -> torch.Tensor:
        mu, sigma = autoencoder.encode(t)
        return torch.cat([mu, sigma], dim=1) if sample else mu

    y = _tiled_apply(fn, x, tile_t, overlap_t, up=1, down=f)
    if not sample:
        return y.to(x.dtype)
    mu, sigma = y.chunk(2, dim=1)
    eps = torch.randn(mu.shape, generator=generator, dtype=torch.float32).to(mu.device)
    return (mu + sigma * eps).to(x.dtype)


def decode_tiled(
    autoencoder,
    z: torch.Tensor,
    *,
    tile: int | Sequence[int],
    overlap: int | Sequence[int],
) -> torch.Tensor:
    """Decode a latent (B, latent_channels, *s) to an image (B, C, *s*f) tile by tile.

    `tile` / `overlap` are in LATENT voxels.  With ``tile >= s`` on every axis this is exactly
    ``autoencoder.decode(z)``.
    """
    nd = z.ndim - 2
    f = _downsample_factor(autoencoder)
    y = _tiled_apply(
        autoencoder.decode, z, _per_axis(tile, nd, "tile"), _per_axis(overlap, nd, "overlap"), up=f, down=1
    )
    return y.to(z.dtype)
