"""The guided latent sampling loop.

MONAI's ``LatentDiffusionInferer.sample`` cannot pass our conditions (token states + mask, pooled text,
density) nor batch the guidance branches, so the loop lives here.  Per step: ONE UNet forward over all
active guidance branches stacked along the batch (see `medgen.diffusion.guidance`), `combine`, then the
scheduler's ``step``.

Determinism: the initial noise is drawn from `generator` on the CPU (float32) and then moved, so a
seed gives the same starting point on every device; the same generator/seed on the same device gives
bit-identical latents (deterministic kernels permitting).  DDPM's per-step noise is drawn from the same
generator (its ``step`` runs on the generator's device, the CPU by default; latents are small).  DDIM (eta = 0) and rectified flow are
deterministic given the initial noise.

The UNet's train/eval mode is left as is (call ``unet.eval()``); the latent scale factor is the
caller's business (divide before decoding).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from medgen.diffusion.guidance import Guidance, TextEncodingLike, active_branches, combine, expand_conditions
from medgen.diffusion.schedulers import add_noise, scheduler_kind

__all__ = ["sample_latents", "initial_noise", "Inpaint"]

log = logging.getLogger(__name__)



class Inpaint(SimpleNamespace):
    """Masked denoising (RePaint's known-region step without resampling): after every step, the latents
    outside `mask` are replaced by `known` noised to the step's new noise level (clean after the last).

    Args:
        known: (B, C, *S) clean latents of the volume being edited (already scaled).
        mask: (B or 1, 1, *S) float, 1 where the latent is regenerated, 0 where `known` is kept.
        generator: CPU generator for the noise added to `known`.
    """

    def __init__(self, known: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None):
        super().__init__(known=known, mask=mask, generator=generator)

    def impose(self, scheduler, x: torch.Tensor, next_t) -> torch.Tensor:
        """`x` with the known region put back at timestep `next_t` (None: the end of sampling)."""
        known = self.known.to(x.device, x.dtype)
        if next_t is not None:
            noise = torch.randn(known.shape, generator=self.generator, dtype=torch.float32).to(x.device, x.dtype)
            t = torch.as_tensor(next_t, device=x.device).reshape(1).expand(known.shape[0])
            known = add_noise(scheduler, known, noise, t)
        mask = self.mask.to(x.device, x.dtype)
        return mask * x + (1.0 - mask) * known


_SCHEDULE_TENSORS = ("betas", "alphas", "alphas_cumprod", "one", "final_alpha_cumprod")


def _move_schedule(scheduler, device: torch.device) -> None:
    """Put the scheduler's schedule tensors on `device` in float32 (MONAI's add_noise may have moved/cast them)."""
    for name in _SCHEDULE_TENSORS:
        value = getattr(scheduler, name, None)
        if isinstance(value, torch.Tensor):
            setattr(scheduler, name, value.to(device=device, dtype=torch.float32))


def initial_noise(shape: Sequence[int], generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal float32 noise drawn on the generator's device (CPU by default), moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device=gen_device).to(device)


def _full_shape(latent_shape: Sequence[int], batch: int, spatial_dims: int | None) -> tuple[int, ...]:
    shape = tuple(int(s) for s in latent_shape)
    if spatial_dims is not None and len(shape) == spatial_dims + 2:
        if shape[0] != batch:
            raise ValueError(f"latent_shape batch {shape[0]} != text batch {batch}")
        return shape
    if spatial_dims is not None and len(shape) != spatial_dims + 1:
        raise ValueError(
            f"latent_shape {shape} must be (C, *S) or (B, C, *S) with {spatial_dims} spatial dims"
        )
    return (batch, *shape)


def sample_latents(
    unet,
    scheduler,
    *,
    encoding: TextEncodingLike,
    null_encoding: TextEncodingLike,
    density: torch.Tensor | None,
    latent_shape: tuple,
    num_inference_steps: int,
    guidance: Guidance,
    generator: torch.Generator | None = None,
    progress: bool = True,
    device=None,
    layout: torch.Tensor | None = None,
    inpaint: Inpaint | None = None,
) -> torch.Tensor:
    """Generate latents (B, C, *S) (float32, on `device`) by guided reverse diffusion.

    Args:
        unet: a `ConditionalUNet` (any module with its forward signature).
        scheduler: from `build_scheduler` (ddpm, ddim or rflow).
        encoding: text encoding of the reports, batch B.
        null_encoding: the text encoder's empty-string encoding (batch 1 or B).
        density: (B,) densities in [0, 1] (NaN = unknown for that sample), or None (no density guidance).
        latent_shape: (C, *S) or (B, C, *S).
        num_inference_steps: scheduler steps.
        guidance: CFG weights (branches with zero weight are skipped).
        generator: CPU generator for the initial (and DDPM step) noise.
        progress: show a tqdm bar.
        device: where to run (default: the UNet's device).
        layout: (B, L, *S) layout channels on the latent grid for a layout-conditioned UNet (every branch
            sees the layout: it is a hard condition, not a guided one).
        inpaint: regenerate only inside a mask, keeping a given latent elsewhere (`Inpaint`; editing).
    """
    params = next(iter(unet.parameters()), None)
    if device is None:
        device = params.device if params is not None else torch.device("cpu")
    device = torch.device(device)
    model_dtype = params.dtype if params is not None else torch.float32
    kind = scheduler_kind(scheduler)

    batch = int(encoding.pooled.shape[0])
    spatial_dims = getattr(unet, "spatial_dims", None)
    shape = _full_shape(latent_shape, batch, spatial_dims)
    has_density = density is not None
    branches = active_branches(guidance, has_density)
    n_branch = len(branches)

    def to_dev(enc: TextEncodingLike) -> SimpleNamespace:
        return SimpleNamespace(
            token_states=enc.token_states.to(device),
            attention_mask=enc.attention_mask.to(device),
            pooled=enc.pooled.to(device),
        )

    dens = None if density is None else torch.as_tensor(density, dtype=torch.float32).reshape(-1).to(device)
    cond = expand_conditions(to_dev(encoding), to_dev(null_encoding), dens, guidance)
    cond["token_states"] = cond["token_states"].to(model_dtype)
    cond["pooled"] = cond["pooled"].to(model_dtype)
    if layout is not None:
        cond["layout"] = layout.to(device=device, dtype=model_dtype).repeat(n_branch, *([1] * (layout.ndim - 1)))

    x = initial_noise(shape, generator, device)

    if kind == "rflow":
        scheduler.set_timesteps(num_inference_steps, device=device, input_img_size_numel=math.prod(shape[2:]))
        timesteps = scheduler.timesteps
        next_timesteps = torch.cat(
            [timesteps[1:], torch.zeros(1, dtype=timesteps.dtype, device=timesteps.device)]
        )
    else:
        if kind == "ddpm" and num_inference_steps != scheduler.num_train_timesteps:
            log.warning(
                "DDPM sampling with %d < %d steps is inexact (MONAI's DDPM step always goes t -> t-1); use DDIM",
                num_inference_steps,
                scheduler.num_train_timesteps,
            )
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        next_timesteps = None
    # DDPM's stochastic step runs where the generator lives (CPU by default): its noise then comes from
    # `generator` and does not depend on the device the UNet runs on.
    step_device = generator.device if (kind == "ddpm" and generator is not None) else device
    if kind == "ddpm" and generator is None:
        step_device = torch.device("cpu")
    if kind != "rflow":
        _move_schedule(scheduler, step_device)

    if inpaint is not None:  # the known region starts at the first step's noise level too
        x = inpaint.impose(scheduler, x, timesteps[0])
    with torch.no_grad():
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling", leave=False)):
            x_in = x.to(model_dtype)
            if n_branch > 1:
                x_in = x_in.repeat(n_branch, *([1] * (x.ndim - 1)))
            t_batch = t.reshape(1).expand(x_in.shape[0]).to(device)
            out = unet(x_in, t_batch, **cond)
            eps = combine(out.float(), batch, guidance, has_density=has_density)
            if kind == "rflow":
                x, _ = scheduler.step(eps, t, x, next_timesteps[i])
            elif kind == "ddim":
                x, _ = scheduler.step(eps, int(t), x)
            else:  # ddpm
                x, _ = scheduler.step(eps.to(step_device), int(t), x.to(step_device), generator=generator)
                x = x.to(device)
            if inpaint is not None:
                last = i + 1 == len(timesteps)
                x = inpaint.impose(scheduler, x, None if last else (next_timesteps[i] if kind == "rflow"
                                                                      else timesteps[i + 1]))
    return x
