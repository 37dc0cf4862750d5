"""The optimisation step shared by the 2D models' training loops (autoencoder, UNets, slice reader): AdamW with
a one-cycle schedule, gradient-norm clipping at 1."""

from __future__ import annotations

import torch


def one_cycle_adamw(params, *, lr: float, steps: int, weight_decay: float = 0.0):
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
