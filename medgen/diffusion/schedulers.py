"""Noise schedulers (MONAI) and the training-side helpers that must agree with their ``step``.

``build_scheduler`` takes one dict, e.g. ``{"name": "ddim", "num_train_timesteps": 1000,
"schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195,
"prediction_type": "epsilon"}``:

* ``ddpm`` -> ``monai.networks.schedulers.DDPMScheduler``.  MONAI's DDPM step always goes from t to
  t - 1, so DDPM sampling is only correct with ``num_inference_steps == num_train_timesteps``.
* ``ddim`` -> `DDIMScheduler`, a subclass of MONAI's whose ``set_timesteps`` uses "trailing" spacing
  (999, 999 - k, ..., with k = T // n).  MONAI 1.6.1 spaces timesteps with ``linspace(T - 1, 0, n)``
  but its ``step`` jumps to ``t - T // n``; the two disagree (e.g. n=4: 999 -> 749 while the next call
  is at 666).  Trailing spacing makes them agree while still starting from the noisiest timestep.
* ``rflow`` -> ``RFlowScheduler`` (velocity prediction; keys ``sample_method``, ``loc``, ``scale``,
  ``use_discrete_timesteps``, ``use_timestep_transform``, ``transform_scale``, ``base_img_size_numel``,
  ``spatial_dim``; the beta/schedule keys are ignored).

``clip_sample`` defaults to False: latents are not confined to [-1, 1].
The latent scale factor is the caller's business.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler as _MonaiDDIMScheduler
from monai.networks.schedulers import DDPMScheduler, RFlowScheduler

__all__ = [
    "DDIMScheduler",
    "DDPMScheduler",
    "RFlowScheduler",
    "add_noise",
    "build_scheduler",
    "sample_timesteps",
    "scheduler_kind",
    "training_target",
]

_SCHEDULE_ARGS = {"beta_start", "beta_end", "sig_range", "s"}
_RFLOW_ARGS = set(inspect.signature(RFlowScheduler.__init__).parameters) - {"self"}


class DDIMScheduler(_MonaiDDIMScheduler):
    """MONAI ``DDIMScheduler`` with "trailing" timestep spacing consistent with its own ``step``.

    ``set_timesteps(n)`` gives ``T - 1 - k * i`` (i = 0..n-1, k = T // n) plus ``steps_offset``; each
    ``step`` from t then lands exactly on the next timestep (t - k), and the last one on t = -1
    (``final_alpha_cumprod``, i.e. a clean sample) whenever n divides T.
    """

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        if num_inference_steps < 1 or num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps` must be in [1, {self.num_train_timesteps}], got {num_inference_steps}"
            )
        if self.steps_offset < 0 or self.steps_offset >= self.num_train_timesteps:
            raise ValueError(
                f"`steps_offset`: {self.steps_offset} must be in range [0, {self.num_train_timesteps})."
            )
        self.num_inference_steps = num_inference_steps
        k = self.num_train_timesteps // num_inference_steps
        start = self.num_train_timesteps - 1 - self.steps_offset
        self.timesteps = (
            start - k * torch.arange(num_inference_steps, device=device)
        ).long() + self.steps_offset


def build_scheduler(config: dict[str, Any]):
    """A MONAI scheduler from a config dict (see module docstring). The dict is kept as ``scheduler.medgen_config``."""
    cfg = dict(config)
    name = str(cfg.pop("name", "ddpm")).lower()
    kept = dict(config)
    if name in ("ddpm", "ddim"):
        cls = DDPMScheduler if name == "ddpm" else DDIMScheduler
        allowed = (
            set(inspect.signature(cls.__init__).parameters) - {"self", "schedule_args"}
        ) | _SCHEDULE_ARGS
        unknown = set(cfg) - allowed
        if unknown:
            raise ValueError(f"unknown {name} scheduler option(s): {sorted(unknown)}")
        cfg.setdefault("clip_sample", False)
        cfg.setdefault("schedule", "scaled_linear_beta")
        if cfg["schedule"] in ("scaled_linear_beta", "linear_beta"):
            cfg.setdefault("beta_start", 0.0015)
            cfg.setdefault("beta_end", 0.0195)
        scheduler = cls(**cfg)
    elif name == "rflow":
        pred = cfg.pop("prediction_type", None)
        if pred not in (None, "v_prediction", "velocity", "flow"):
            raise ValueError(f"rflow predicts the flow velocity; prediction_type={pred!r} is not supported")
        for key in list(cfg):
            if key in _SCHEDULE_ARGS or key in (
                "schedule",
                "clip_sample",
                "variance_type",
                "set_alpha_to_one",
            ):
                cfg.pop(key)
        unknown = set(cfg) - _RFLOW_ARGS
        if unknown:
            raise ValueError(f"unknown rflow scheduler option(s): {sorted(unknown)}")
        scheduler = RFlowScheduler(**cfg)
    else:
        raise ValueError(f"unknown scheduler name {name!r}; expected 'ddpm', 'ddim' or 'rflow'")
    scheduler.medgen_config = kept
    return scheduler


def scheduler_kind(scheduler) -> str:
    """'rflow', 'ddim' or 'ddpm'."""
    if isinstance(scheduler, RFlowScheduler):
        return "rflow"
    if isinstance(scheduler, _MonaiDDIMScheduler):
        return "ddim"
    if isinstance(scheduler, DDPMScheduler):
        return "ddpm"
    raise TypeError(f"unsupported scheduler type {type(scheduler).__name__}")


def add_noise(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Noisy latents x_t (computed in float32, returned in ``latents.dtype``).

    Going through float32 also stops MONAI's ``add_noise`` from permanently casting the scheduler's
    ``alphas_cumprod`` to a low-precision dtype (it converts them to the input's dtype in place).
    """
    timesteps = torch.as_tensor(timesteps, device=latents.device)
    out = scheduler.add_noise(original_samples=latents.float(), noise=noise.float(), timesteps=timesteps)
    return out.to(latents.dtype)


def training_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet must predict for ``add_noise(scheduler, latents, noise, timesteps)``, consistent with ``step``.

    * rflow: velocity ``latents - noise`` (MONAI's step moves ``x + v * dt`` towards the data as t decreases);
    * prediction_type "epsilon": ``noise``; "v_prediction": ``scheduler.get_velocity`` =
      sqrt(a_t) * noise - sqrt(1 - a_t) * latents; "sample": ``latents``.
    """
    if isinstance(scheduler, RFlowScheduler):
        return latents - noise
    pred = scheduler.prediction_type
    if pred == "epsilon":
        return noise
    if pred == "v_prediction":
        timesteps = torch.as_tensor(timesteps, device=latents.device)
        return scheduler.get_velocity(latents.float(), noise.float(), timesteps).to(latents.dtype)
    if pred == "sample":
        return latents
    raise ValueError(f"unsupported prediction_type {pred!r}")


def sample_timesteps(
    scheduler,
    batch: int,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    *,
    latent_shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Training timesteps for a batch: uniform integers in [0, T) for DDPM/DDIM; for rflow the scheduler's
    own ``sample_timesteps`` (uniform or logit-normal, optional resolution-dependent transform).

    Draws happen on the generator's device (CPU by default) and are moved to `device`.  For rflow, whose
    MONAI sampler uses the global RNG, the draw runs under a forked CPU RNG seeded from `generator` so
    that the generator alone determines the result.  `latent_shape` (spatial shape, or (C, *S)/(B, C, *S))
    is needed only with ``use_timestep_transform``.
    """
    if isinstance(scheduler, RFlowScheduler):
        spatial_dim = int(getattr(scheduler, "spatial_dim", 3))
        if latent_shape is None:
            if scheduler.use_timestep_transform:
                raise ValueError("rflow with use_timestep_transform needs `latent_shape`")
            spatial: tuple[int, ...] = (1,) * spatial_dim
        else:
            spatial = tuple(int(s) for s in latent_shape)[-spatial_dim:]
        x_start = torch.empty((batch, 1, *spatial))
        if generator is None:
            t = scheduler.sample_timesteps(x_start)
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                t = scheduler.sample_timesteps(x_start)
        t = torch.as_tensor(t)
        return t.to(device) if device is not None else t
    gen_device = generator.device if generator is not None else torch.device("cpu")
    t = torch.randint(0, scheduler.num_train_timesteps, (batch,), generator=generator, device=gen_device)
    return t.to(device) if device is not None else t
