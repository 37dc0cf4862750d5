"""The preview's 2D latent space: a small diffusers `AutoencoderKL` (1 channel, 128 px -> 4 x 32 x 32), trained
on phantom slices with an L1 loss weighted up inside findings (lesions, fluid), so the latent keeps what the
captions talk about. Its ceiling is measured (`reconstruction_error`) before any UNet is trained on it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from medgen.engine.optim import one_cycle_adamw, optimizer_step
from medgen.layout.labels import CHANNELS, finding_mask
from medgen.slices.generator.data import PreviewPairs, batch_inputs
from medgen.volume import HU_WINDOW

LESION, EFFUSION = CHANNELS.index("lesion"), CHANNELS.index("effusion")
HU_PER_UNIT = (HU_WINDOW[1] - HU_WINDOW[0]) / 2  # [-1, 1] image units -> HU


def build_vae(channels=(32, 64, 64), latent_channels: int = 4):
    """AutoencoderKL with len(channels) levels: down by 2 ** (len(channels) - 1)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * len(channels),
                         up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=tuple(channels),
                         latent_channels=latent_channels, layers_per_block=1, norm_num_groups=16,
                         sample_size=128)


def train_preview_vae(vae, pairs: PreviewPairs, *, steps: int, batch_size: int = 16, lr: float = 1e-3,
                      kl: float = 1e-6, finding_weight: float = 10.0, seed: int = 0, progress: bool = True) -> dict:
    """Train `vae` in place; returns the loss record. The L1 loss weighs `finding_weight` (the whole weight,
    not an extra) inside lesions and fluid, 1 elsewhere."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"`steps` and `batch_size` must be >= 1, got {steps}, {batch_size}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer, schedule, params = one_cycle_adamw(vae.parameters(), lr=lr, steps=steps)
    vae.train()
    losses, start = [], time.time()
    for _ in tqdm(range(steps), desc="preview autoencoder", unit="step", disable=not progress):
        batch = batch_inputs(pairs, rng.integers(0, len(pairs), batch_size), rng=rng)
        posterior = vae.encode(batch["image"]).latent_dist
        recon = vae.decode(posterior.sample()).sample
        weights = 1.0 + (finding_weight - 1.0) * finding_mask(batch["layout"])
        loss = (weights * (recon - batch["image"]).abs()).sum() / weights.sum() + kl * posterior.kl().mean()
        losses.append(optimizer_step(loss, optimizer, schedule, params))
    vae.eval()
    return {"steps": steps, "loss_first": losses[0], "loss_last50": float(np.mean(losses[-50:])),
            "seconds": round(time.time() - start, 1)}


@torch.no_grad()
def latent_scale(vae, pairs: PreviewPairs, n: int = 256) -> float:
    """1 / std of the latent means over `n` pairs (the diffusion model works on unit-variance latents)."""
    index = np.arange(min(n, len(pairs)))
    image = torch.from_numpy(pairs.image[index].astype(np.float32))[:, None]
    return float(1.0 / vae.encode(image).latent_dist.mean.std())


@torch.no_grad()
def reconstruction_error(vae, pairs: PreviewPairs, *, batch_size: int = 32) -> dict:
    """Mean absolute reconstruction error in HU over whole slices, inside lesions and inside fluid."""
    sums = {"whole": [0.0, 0], "lesion": [0.0, 0], "effusion": [0.0, 0]}
    for start in range(0, len(pairs), batch_size):
        index = np.arange(start, min(start + batch_size, len(pairs)))
        batch = batch_inputs(pairs, index, crop_p=0.0)
        recon = vae.decode(vae.encode(batch["image"]).latent_dist.mean).sample.clamp(-1, 1)
        error = (recon - batch["image"]).abs()[:, 0] * HU_PER_UNIT
        masks = {"whole": torch.ones_like(error, dtype=torch.bool), "lesion": batch["layout"][:, LESION] > 0.5,
                 "effusion": batch["layout"][:, EFFUSION] > 0.5}
        for name, mask in masks.items():
            sums[name][0] += float(error[mask].sum())
            sums[name][1] += int(mask.sum())
    return {f"mae_hu_{name}": round(total / max(count, 1), 1) for name, (total, count) in sums.items()}


def vae_encode(vae, image: torch.Tensor, scale: float) -> torch.Tensor:
    return vae.encode(image).latent_dist.mean * scale


def vae_decode(vae, latents: torch.Tensor, scale: float) -> torch.Tensor:
    return vae.decode(latents / scale).sample.clamp(-1, 1)


__all__ = ["build_vae", "latent_scale", "reconstruction_error", "train_preview_vae", "vae_decode", "vae_encode"]
