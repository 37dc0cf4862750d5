"""Tiled encode/decode: exact with one tile, close to plain and seam-free with overlapping tiles."""

from __future__ import annotations

import math

import pytest
import torch

from medgen.models import build_autoencoder, decode_tiled, encode_tiled
from medgen.models.tiling import blend_weights_1d, tile_starts

F = 2  # downsampling of the tiny autoencoder


@pytest.fixture(scope="module")
def ae3d():
    torch.manual_seed(0)
    return build_autoencoder({"channels": [8, 16], "norm_num_groups": 4, "latent_channels": 4}).eval()


def test_tile_starts_cover_and_align():
    assert tile_starts(16, 32, 4) == [0]
    assert tile_starts(16, 16, 4) == [0]
    starts = tile_starts(24, 12, 6)
    assert starts == [0, 6, 12]
    starts = tile_starts(20, 8, 2)
    assert starts[0] == 0 and starts[-1] == 12
    assert all(b - a <= 6 for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError):
        tile_starts(20, 8, 8)
    with pytest.raises(ValueError):
        tile_starts(22, 8, 3, align=2)


def test_blend_weights_partition_of_unity():
    ramp = 6
    a = blend_weights_1d(12, ramp, taper_start=False, taper_end=True)
    b = blend_weights_1d(12, ramp, taper_start=True, taper_end=False)
    # neighbouring tiles overlapping by exactly `ramp` voxels sum to 1 there
    torch.testing.assert_close(a[-ramp:] + b[:ramp], torch.ones(ramp, dtype=torch.float64))
    assert (a > 0).all() and (b > 0).all()
    assert torch.equal(blend_weights_1d(7, 3, False, False), torch.ones(7, dtype=torch.float64))


@pytest.mark.parametrize("tile", [16, 64, (16, 40, 16)])
def test_single_tile_equals_plain(ae3d, tile):
    torch.manual_seed(1)
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        mu, _ = ae3d.encode(x)
        z = torch.randn(2, 4, 8, 8, 8)
        plain = ae3d.decode(z)
        enc = encode_tiled(ae3d, x, tile=tile, overlap=4)
        dec = decode_tiled(ae3d, z, tile=tile, overlap=2)
    assert enc.shape == mu.shape == (2, 4, 8, 8, 8)
    torch.testing.assert_close(enc, mu, rtol=0, atol=1e-6)
    torch.testing.assert_close(dec, plain, rtol=0, atol=1e-6)


def test_overlapping_tiles_close_to_plain(ae3d):
    # GroupNorm statistics are computed per tile, so tiled != plain exactly; on stationary inputs the
    # difference is small compared with the signal.
    torch.manual_seed(2)
    z = torch.randn(1, 4, 16, 16, 16)
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        plain = ae3d.decode(z)
        tiled = decode_tiled(ae3d, z, tile=12, overlap=6)
        mu, _ = ae3d.encode(x)
        enc = encode_tiled(ae3d, x, tile=16, overlap=8)
    assert tiled.shape == plain.shape
    assert (tiled - plain).abs().mean() < 0.2 * plain.std()
    assert enc.shape == mu.shape
    assert (enc - mu).abs().mean() < 0.2 * mu.std()


def _smooth_latent(n: int) -> torch.Tensor:
    g = torch.linspace(0, 1, n)
    X, Y, Z = torch.meshgrid(g, g, g, indexing="ij")
    return torch.stack([torch.sin(2 * math.pi * X), torch.cos(2 * math.pi * Y), X * Z, torch.ones_like(X)])[
        None
    ]


def _border_and_inside_jumps(img: torch.Tensor, n: int, tile: int, overlap: int):
    """Max |neighbour difference| along axis 0 for pairs straddling a tile edge vs all other pairs."""
    jumps = (img[:, :, 1:] - img[:, :, :-1]).abs().amax(dim=(0, 1, 3, 4))
    border = set()
    for s in tile_starts(n, tile, overlap):
        if s > 0:
            border.add(s * F - 1)
        if (s + tile) * F < n * F:
            border.add((s + tile) * F - 1)
    mask = torch.zeros(jumps.shape[0], dtype=torch.bool)
    mask[sorted(border)] = True
    return jumps[mask].max().item(), jumps[~mask].max().item()


def test_no_seams(ae3d):
    n, tile, overlap = 16, 10, 4
    z = _smooth_latent(n)
    with torch.no_grad():
        blended = decode_tiled(ae3d, z, tile=tile, overlap=overlap)
        hard = decode_tiled(ae3d, z, tile=tile, overlap=0)
    border, inside = _border_and_inside_jumps(blended, n, tile, overlap)
    assert border <= inside
    # control: without overlap the tile edges do show up as jumps
    hard_border, _ = _border_and_inside_jumps(hard, n, tile, 0)
    assert hard_border > border


def test_sampled_encode_deterministic_and_2d():
    torch.manual_seed(3)
    ae = build_autoencoder(
        {"spatial_dims": 2, "channels": [8, 16, 16], "norm_num_groups": 4, "latent_channels": 3}
    ).eval()
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        a = encode_tiled(ae, x, tile=16, overlap=8, sample=True, generator=torch.Generator().manual_seed(0))
        b = encode_tiled(ae, x, tile=16, overlap=8, sample=True, generator=torch.Generator().manual_seed(0))
        mu = encode_tiled(ae, x, tile=16, overlap=8)
        img = decode_tiled(ae, mu, tile=(4, 6), overlap=2)
    assert a.shape == (1, 3, 8, 12)
    assert torch.equal(a, b)
    assert not torch.equal(a, mu)
    assert img.shape == x.shape


def test_tile_must_align_with_downsampling(ae3d):
    x = torch.randn(1, 1, 16, 16, 16)
    with pytest.raises(ValueError):
        encode_tiled(ae3d, x, tile=7, overlap=2)
    with pytest.raises(ValueError):
        encode_tiled(ae3d, x, tile=8, overlap=3)
