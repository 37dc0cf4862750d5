"""Global ("added") conditioning embedding: lesion density + pooled report text.

The vector returned by `DensityTextEmbedding` has the size of the UNet's timestep embedding and is
ADDED to it (SDXL micro-conditioning / MAISI spacing style), so it modulates every ResNet block via
the scale-shift of the time embedding, complementing token-level cross-attention.

* density: (B,) float in [0, 1]; NaN means "unknown / not specified" and selects a learned null vector
  (this is also the density-dropout branch for classifier-free guidance).
* pooled text: (B, D_text) -> Linear.  There is no learned null for text: dropping the text means
  feeding the text encoder's empty-string encoding (supplied by the caller).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DensityTextEmbedding", "fourier_features"]


def fourier_features(x: torch.Tensor, num_frequencies: int, max_frequency: float = 64.0) -> torch.Tensor:
    """(B,) in ~[0, 1] -> (B, 2 * num_frequencies + 1): [x, sin(2 pi f_k x), cos(2 pi f_k x)], f_k geometric in [1/2, max]."""
    freqs = torch.exp(
        torch.linspace(
            math.log(0.5), math.log(max_frequency), num_frequencies, device=x.device, dtype=torch.float32
        )
    )
    angles = 2.0 * math.pi * x.float()[:, None] * freqs[None]
    return torch.cat([x.float()[:, None], torch.sin(angles), torch.cos(angles)], dim=1)


class DensityTextEmbedding(nn.Module):
    """(density (B,), pooled (B, D_text)) -> (B, embed_dim), summed from two branches.

    Args:
        embed_dim: output size (the UNet's time embedding size, ``4 * channels[0]``).
        pooled_dim: size of the pooled text vector.
        num_frequencies: sinusoidal frequencies used to featurise the density.

    The output layers and the null vector are zero-initialised (the added embedding starts at 0, so
    training starts from the plain timestep embedding); gradients still reach every parameter.
    """

    def __init__(self, embed_dim: int, pooled_dim: int, num_frequencies: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.pooled_dim = pooled_dim
        self.num_frequencies = num_frequencies
        self.density_mlp = nn.Sequential(
            nn.Linear(2 * num_frequencies + 1, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.density_null = nn.Parameter(torch.zeros(embed_dim))
        self.text_proj = nn.Linear(pooled_dim, embed_dim)
        for layer in (self.density_mlp[-1], self.text_proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, density: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        if density.ndim != 1:
            density = density.reshape(-1)
        unknown = torch.isnan(density)
        feats = fourier_features(
            torch.where(unknown, torch.zeros_like(density), density), self.num_frequencies
        )
        dtype = self.text_proj.weight.dtype
        d_emb = self.density_mlp(feats.to(dtype))
        d_emb = torch.where(unknown[:, None], self.density_null.to(d_emb.dtype)[None].expand_as(d_emb), d_emb)
        return d_emb + self.text_proj(pooled.to(dtype))
