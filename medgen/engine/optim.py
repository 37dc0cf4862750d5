"""Optimisers and learning-rate schedules shared by every trainer.

- `cosine_warmup_factor`: the one warm-up + decay formula: a linear warm-up ``(step + 1) / warmup``, then a
  cosine (or linear) decay to ``min_ratio`` at ``total``.
- `warmup_cosine_schedule`: that formula as a ``LambdaLR`` (slice CLIP, the compact text encoder, the refiner).
- `make_optimizer` + `set_learning_rates`: the same formula for the 3D VAE / LDM trainers, whose param groups
  carry ``base_lr`` and ``warmup_start`` (a group added mid-run, e.g. unfrozen text layers, warms up on its
  own) in the optimizer's state dict, so a resumed run restores the schedule with it.
- `one_cycle_adamw` + `optimizer_step`: the 2D models' loops (preview autoencoder, UNets, slice reader): AdamW
  with PyTorch's one-cycle schedule, gradient-norm clipping at 1.
"""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_warmup_factor", "make_optimizer", "one_cycle_adamw", "optimizer_step", "set_learning_rates",
           "warmup_cosine_schedule"]

DECAYS = ("cosine", "linear")


def cosine_warmup_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0, decay: str = "cosine") -> float:
    """LR multiplier for 0-based `step`: linear warm-up ``(step + 1) / warmup``, then `decay` ("cosine" or
    "linear") from 1 to `min_ratio` at `total` (and `min_ratio` after it)."""
    if decay not in DECAYS:
        raise ValueError(f"`decay` must be one of {DECAYS}, got {decay!r}")
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    remaining = 0.5 * (1.0 + math.cos(math.pi * progress)) if decay == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * remaining


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.0,
                           decay: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` over `cosine_warmup_factor`: call ``step()`` once per optimizer step."""
    if decay not in DECAYS:
        raise ValueError(f"`decay` must be one of {DECAYS}, got {decay!r}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_warmup_factor(step, warmup, total, min_ratio, decay))


def make_optimizer(params, lr: float, *, weight_decay: float = 0.0, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with one param group carrying ``base_lr`` / ``warmup_start`` for `set_learning_rates`."""
    optimizer = torch.optim.AdamW([{"params": list(params), "base_lr": float(lr), "warmup_start": 0}],
                                  lr=float(lr), betas=betas, weight_decay=weight_decay)
    return optimizer


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, warmup: int, total: int,
                       min_ratio: float = 0.0) -> None:
    """Set every param group's lr for `step`: ``base_lr x warm-up(step - warmup_start) x cosine(step)``.

    Each group carries ``base_lr`` and ``warmup_start`` (the step it joined; its own warm-up starts
    there), stored in the optimizer's state dict, so a resumed run restores the schedule with it.
    """
    cosine = cosine_warmup_factor(max(step, warmup), warmup, total, min_ratio)
    for group in optimizer.param_groups:
        local = step - int(group.get("warmup_start", 0))
        ramp = min(1.0, (local + 1) / warmup) if warmup > 0 else 1.0
        group["lr"] = float(group["base_lr"]) * ramp * cosine


def one_cycle_adamw(params, *, lr: float, steps: int, weight_decay: float = 0.0):
    """(AdamW, ``OneCycleLR`` peaking at `lr` after 5 % of `steps`, the parameter list)."""
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    return optimizer, schedule, params


def optimizer_step(loss: torch.Tensor, optimizer, schedule, params, max_norm: float = 1.0) -> float:
    """Backward, clip, step; returns the loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    schedule.step()
    return float(loss.detach())
