"""Sampling preview latents: DPM++ 2M Karras (default) or DDIM, the base UNet on the high-noise part and the
refiner on the tail (t < ``refiner_start``), composable text/density guidance from `medgen.diffusion.guidance`
(every active branch in one batched UNet forward per step)."""

from __future__ import annotations

import torch

from medgen.diffusion.guidance import Guidance, active_branches, combine, expand_conditions
from medgen.slices.generator.distill import sample_student
from medgen.slices.generator.model import SlicePreviewModel, predict_noise

SAMPLERS = ("dpmpp-2m-karras", "ddim", "distilled")


def build_sampler(config: dict, kind: str):
    """A diffusers scheduler for `kind`, on the training noise schedule."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = {"num_train_timesteps": int(config["num_train_timesteps"]), "beta_schedule": config["beta_schedule"],
              "prediction_type": "epsilon"}
    if kind == "dpmpp-2m-karras":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           use_karras_sigmas=True)
    if kind == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    raise ValueError(f"`sampler` must be one of {SAMPLERS[:2]} for a scheduler, got {kind!r}")


@torch.no_grad()
def sample_preview_latents(model: SlicePreviewModel, layout: torch.Tensor, encoding, null_encoding, density,
                           micro, *, steps: int = 20, sampler: str = "dpmpp-2m-karras",
                           guidance: Guidance | None = None, use_refiner: bool = True,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents (B, c, h, w) for B layouts (B, C, h, w) on the latent grid.

    Args:
        encoding / null_encoding: `TextEncoding` of the captions (batch B) and of the empty string.
        density: (B,) target density in [0, 1] or None (no density condition).
        micro: (B, 6) raw micro-conditioning.
        use_refiner: hand the latent to the refiner below ``config["refiner_start"]`` (if the model has one).
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}")
    if sampler == "distilled":  # one conditional branch per step, no guidance (distilled into the student)
        if model.student is None:
            raise ValueError("this preview model has no distilled student (train it with --student-steps)")
        return sample_student(model, model.student, layout, encoding, null_encoding, density, micro, steps=steps,
                              generator=generator)
    guidance = guidance or Guidance()
    scheduler = build_sampler(model.config, sampler)
    scheduler.set_timesteps(steps)
    b = layout.shape[0]
    size = int(model.config["size"]) // model.factor
    shape = (b, int(model.config["latent_channels"]), size, size)
    latents = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    has_density = density is not None
    conditions = expand_conditions(encoding, null_encoding,
                                   None if density is None else torch.as_tensor(density, dtype=torch.float32),
                                   guidance)
    n = len(active_branches(guidance, has_density))
    layout_n, micro_n = layout.repeat(n, 1, 1, 1), torch.as_tensor(micro, dtype=torch.float32).repeat(n, 1)
    refiner_start = int(model.config.get("refiner_start", 0))
    for t in scheduler.timesteps:
        unet = model.refiner if (use_refiner and model.refiner is not None and int(t) < refiner_start) else model.base
        x = scheduler.scale_model_input(latents, t).repeat(n, 1, 1, 1)
        eps = predict_noise(unet, x, t, layout_n, conditions, micro_n)
        latents = scheduler.step(combine(eps, b, guidance, has_density=has_density), t, latents).prev_sample
    return latents
