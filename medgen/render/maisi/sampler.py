"""MAISI's inference procedure on a label map: ControlNet-conditioned latent denoising, then a tiled VAE decode
to HU.

1. The label map (MAISI ids, < 256) becomes the ControlNet's 8-channel condition: channel i holds bit i of
   each voxel's label value.
2. Noise of shape (C, X/4, Y/4, Z/4) from a seeded CPU generator; the rectified-flow scheduler's timesteps
   are set for that latent size (``input_img_size_numel``); at each step the ControlNet's residuals feed the
   diffusion UNet, which also takes the spacing (mm x 100), the modality class (CT = 1) and, for models
   trained with it (ddpm-ct), the top/bottom body-region one-hot vectors (x 100).
3. The latent is divided by the scale factor and decoded by the VAE in overlapping windows (Gaussian-weighted
   sliding window) whenever it is larger than one window; the output, clipped to [0, 1], maps linearly to
   [-1000, 1000] HU, and voxels outside the label map (label 0) are set to -1000 HU.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from medgen.render.maisi.networks import MaisiNetworks

HU_MIN, HU_MAX = -1000.0, 1000.0
# MAISI's body regions (head/neck, thorax, abdomen, pelvis) and the labels that reveal each.
REGION_LABELS = ([22, 120], [28, 29, 30, 31, 32], [1, 2, 3, 4, 5, 14], [93, 94])


def binarize_labels(labels: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """(B, 1, X, Y, Z) integer labels -> (B, bits, X, Y, Z) uint8: channel i = bit i of the label value."""
    labels = labels.long()
    if labels.min() < 0 or labels.max() >= 2**bits:
        raise ValueError(f"labels must lie in [0, {2**bits - 1}] to be binarized into {bits} channels")
    return torch.cat([((labels >> i) & 1) for i in range(bits)], dim=1).to(torch.uint8)


def region_index(labels: np.ndarray) -> tuple[list[int], list[int]]:
    """One-hot (top, bottom) body region of a MAISI label map: the first and last region whose labels occur."""
    present = set(np.unique(labels).tolist())
    hits = [i for i, ids in enumerate(REGION_LABELS) if present & set(ids)]
    if not hits:
        hits = [1]  # no region label at all: the thorax, what medgen renders
    eye = np.eye(len(REGION_LABELS), dtype=int)
    return eye[min(hits)].tolist(), eye[max(hits)].tolist()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()


def sample_latent(nets: MaisiNetworks, labels: np.ndarray, spacing, *, steps: int, seed: int, modality: int = 1,
                  progress: bool = False) -> torch.Tensor:
    """The denoised latent (1, C, X/4, Y/4, Z/4) for a MAISI label map (X, Y, Z) at `spacing` mm."""
    from monai.networks.schedulers import RFlowScheduler

    device = nets.device
    shape = tuple(int(s) // 4 for s in labels.shape)
    cond = binarize_labels(torch.from_numpy(np.ascontiguousarray(labels)).long()[None, None]).to(device)
    cond = cond.half() if device.type == "cuda" else cond.float()
    generator = torch.Generator("cpu").manual_seed(int(seed))
    latents = torch.randn((1, nets.latent_channels, *shape), generator=generator).to(device)
    spacing_t = torch.tensor([list(spacing)], dtype=torch.float32, device=device) * 1e2
    modality_t = torch.full((1,), int(modality), dtype=torch.long, device=device)
    region = None
    if nets.include_body_region:
        top, bottom = region_index(labels)
        region = tuple(torch.tensor([v], dtype=torch.float32, device=device) * 1e2 for v in (top, bottom))
    scheduler = nets.scheduler
    if isinstance(scheduler, RFlowScheduler):
        scheduler.set_timesteps(num_inference_steps=int(steps), input_img_size_numel=int(np.prod(shape)))
    else:
        scheduler.set_timesteps(num_inference_steps=int(steps))
    timesteps = scheduler.timesteps
    following = torch.cat((timesteps[1:], torch.tensor([0], dtype=timesteps.dtype)))
    pairs = list(zip(timesteps, following, strict=True))
    if progress:
        from tqdm import tqdm

        pairs = tqdm(pairs, desc="maisi", unit="step", leave=False)
    with torch.no_grad(), _autocast(device):
        for t, t_next in pairs:
            t_in = torch.tensor([float(t)], device=device)
            extra = {"class_labels": modality_t} if nets.include_modality else {}
            down, mid = nets.controlnet(x=latents, timesteps=t_in, controlnet_cond=cond, **extra)
            kwargs = dict(x=latents, timesteps=t_in, spacing_tensor=spacing_t, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid, **extra)
            if region is not None:
                kwargs.update(top_region_index_tensor=region[0], bottom_region_index_tensor=region[1])
            output = nets.diffusion_unet(**kwargs)
            if isinstance(scheduler, RFlowScheduler):
                latents, _ = scheduler.step(output, t, latents, t_next)
            else:
                latents, _ = scheduler.step(output, t, latents)
    return latents.float()


def decode_latent(nets: MaisiNetworks, latent: torch.Tensor, *, roi=(80, 80, 80), overlap: float = 0.4) -> np.ndarray:
    """HU (X, Y, Z) float32 of a denoised latent: VAE decode in Gaussian-weighted overlapping windows of `roi`
    latent voxels (one pass when the latent fits one window), [0, 1] -> [-1000, 1000] HU."""
    from monai.inferers import SlidingWindowInferer

    device = nets.device
    roi = [min(int(r), int(s)) for r, s in zip(roi, latent.shape[2:], strict=True)]
    scale = nets.scale_factor

    def decode(z):
        return nets.autoencoder.decode_stage_2_outputs(z / scale).float()

    with torch.no_grad(), _autocast(device):
        latent = latent.to(device)
        if math.prod(latent.shape[2:]) <= math.prod(roi):
            image = decode(latent).cpu()
        else:
            inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=float(overlap), mode="gaussian",
                                           sw_device=device, device=torch.device("cpu"), progress=False)
            image = inferer(inputs=latent, network=decode)
    image = torch.clamp(image.float(), 0.0, 1.0)[0, 0].numpy()
    return (image * (HU_MAX - HU_MIN) + HU_MIN).astype(np.float32)
