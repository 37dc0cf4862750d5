"""Training the preview: the autoencoder first (its ceiling measured), then the base UNet on every noise
level and the refiner UNet on the low-noise tail only, all on `PreviewPairs`.

Conditioning dropout makes the guidance branches (`medgen.diffusion.guidance`) meaningful: the caption is
replaced by the empty string with probability `p_text_drop` (the "uncond" branch), the density by "unknown"
with probability `p_density_drop` (the "text" branch); each pair's caption is English or Chinese at random.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from medgen.engine.optim import one_cycle_adamw, optimizer_step
from medgen.slices.generator.autoencoder import vae_encode
from medgen.slices.generator.data import PreviewPairs, batch_inputs
from medgen.slices.generator.model import SlicePreviewModel, pool_to_latent, predict_noise
from medgen.text import TextEncoding


def noise_schedule(config: dict):
    """The training scheduler (diffusers DDPM; samplers are built from its config)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=int(config["num_train_timesteps"]),
                         beta_schedule=config["beta_schedule"], prediction_type="epsilon")


def _conditions(model: SlicePreviewModel, pairs: PreviewPairs, index, micro, rng, p_text_drop, p_density_drop):
    captions = [(pairs.captions_zh if rng.random() < 0.5 else pairs.captions_en)[i] for i in index]
    captions = ["" if rng.random() < p_text_drop else c for c in captions]
    with torch.no_grad():
        encoding = model.text_encoder(captions)
    density = torch.tensor(micro[:, -1], dtype=torch.float32)
    density[density < 0] = float("nan")
    density[torch.from_numpy(rng.random(len(index)) < p_density_drop)] = float("nan")
    return {"token_states": encoding.token_states, "attention_mask": encoding.attention_mask,
            "pooled": encoding.pooled, "density": density}


def train_unet(model: SlicePreviewModel, unet, pairs: PreviewPairs, *, steps: int, batch_size: int = 16,
               lr: float = 5e-4, t_range=(0, 1000), p_text_drop: float = 0.1, p_density_drop: float = 0.2,
               seed: int = 0, name: str = "base", progress: bool = True) -> dict:
    """Train `unet` (the model's base or refiner) in place on timesteps in ``[t_range[0], t_range[1])``."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"`steps` and `batch_size` must be >= 1, got {steps}, {batch_size}")
    low, high = int(t_range[0]), int(t_range[1])
    if not 0 <= low < high <= int(model.config["num_train_timesteps"]):
        raise ValueError(f"`t_range` must lie in [0, {model.config['num_train_timesteps']}], got {t_range}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scheduler = noise_schedule(model.config)
    optimizer, schedule, params = one_cycle_adamw(unet.parameters(), lr=lr, steps=steps, weight_decay=1e-4)
    model.vae.eval()
    unet.train()
    losses, start = [], time.time()
    for _ in tqdm(range(steps), desc=f"preview {name}", unit="step", disable=not progress):
        batch = batch_inputs(pairs, rng.integers(0, len(pairs), batch_size), rng=rng)
        with torch.no_grad():
            latents = vae_encode(model.vae, batch["image"], model.scale)
        layout = pool_to_latent(batch["layout"], model.factor)
        conditions = _conditions(model, pairs, batch["index"], batch["micro"], rng, p_text_drop, p_density_drop)
        noise = torch.randn_like(latents)
        t = torch.randint(low, high, (batch_size,))
        noisy = scheduler.add_noise(latents, noise, t)
        loss = torch.nn.functional.mse_loss(predict_noise(unet, noisy, t, layout, conditions, batch["micro"]), noise)
        losses.append(optimizer_step(loss, optimizer, schedule, params))
    unet.eval()
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "t_range": [low, high],
            "loss_first50": float(np.mean(losses[:50])), "loss_last50": float(np.mean(losses[-50:])),
            "seconds": round(time.time() - start, 1)}


__all__ = ["noise_schedule", "train_unet", "TextEncoding"]
