"""Training-state helpers: EMA of weights and gradient clipping (fixed or adaptive); the learning-rate
schedules are in `medgen.engine.optim`.

Every class here has ``state_dict()`` / ``load_state_dict()`` made of tensors and JSON values only, so
`medgen.engine.checkpoint` can store it without pickling.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque

import torch

__all__ = ["EMA", "GradClipper"]


class EMA:
    """Exponential moving average of named parameters: ``shadow = decay * shadow + (1 - decay) * param``.

    Parameters are registered by name (`register`), so the set may grow during training (stage 2 of
    the LDM registers the text-encoder layers it unfreezes); a new shadow starts at the current value.

    Args:
        decay: in [0, 1); 0 copies the weights.
    """

    def __init__(self, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.params: dict[str, torch.nn.Parameter] = {}
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0

    def register(self, named_params, prefix: str = "") -> None:
        """Track `named_params` (``(name, param)`` pairs); already-tracked names keep their shadow."""
        for name, param in named_params:
            key = prefix + name
            self.params[key] = param
            if key in self.shadow:  # restored from a checkpoint before registration
                self.shadow[key] = self.shadow[key].to(param.device)
            else:
                self.shadow[key] = param.detach().float().clone()

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step for every tracked parameter."""
        self.num_updates += 1
        keys = list(self.params)
        if not keys:
            return
        shadows = [self.shadow[k] for k in keys]
        values = [self.params[k].detach().to(self.shadow[k].dtype) for k in keys]
        torch._foreach_lerp_(shadows, values, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self) -> None:
        """Write the averaged weights into the tracked parameters."""
        for key, param in self.params.items():
            param.copy_(self.shadow[key].to(param.dtype))

    @contextlib.contextmanager
    def applied(self):
        """Temporarily swap the averaged weights in (e.g. to sample validation volumes), then restore."""
        backup = {k: p.detach().clone() for k, p in self.params.items()}
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                for key, param in self.params.items():
                    param.copy_(backup[key])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        """Restore shadows (for names not registered yet too: they are kept until registered)."""
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for key, value in state["shadow"].items():
            device = self.params[key].device if key in self.params else value.device
            self.shadow[key] = value.to(device=device, dtype=torch.float32).clone()


class GradClipper:
    """Gradient-norm clipping: off, fixed (`max_norm`) or adaptive.

    Adaptive: the threshold is ``factor x statistic(last window norms)`` (statistic: median or mean);
    until `min_history` norms are seen there is no threshold.  The norm recorded after a step is the
    clipped one, so a single spike does not raise the threshold.  Built from the config value
    ``null | {mode: fixed, max_norm} | {mode: adaptive, window, factor[, statistic, min_history]}``.
    """

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        self.mode = config.get("mode", "none") if config else "none"
        if self.mode not in ("none", "fixed", "adaptive"):
            raise ValueError(f"grad_clip `mode` must be 'fixed' or 'adaptive', got {self.mode!r}")
        self.max_norm = float(config.get("max_norm", math.inf))
        self.window = int(config.get("window", 100))
        self.factor = float(config.get("factor", 2.0))
        self.statistic = config.get("statistic", "median")
        self.min_history = int(config.get("min_history", min(10, self.window)))
        self.history: deque[float] = deque(maxlen=self.window)
        self.num_clipped = 0
        self.num_skipped = 0

    def threshold(self) -> float:
        """The current clipping threshold (inf: no clipping)."""
        if self.mode == "fixed":
            return self.max_norm
        if self.mode == "adaptive" and len(self.history) >= self.min_history:
            values = torch.tensor(list(self.history), dtype=torch.float64)
            stat = values.quantile(0.5) if self.statistic == "median" else values.mean()
            return self.factor * float(stat)
        return math.inf

    def __call__(self, parameters) -> float:
        """Clip the gradients of `parameters` in place; return the norm before clipping (may be non-finite)."""
        params = [p for p in parameters if p.grad is not None]
        if not params:
            return 0.0
        limit = self.threshold()
        norm = float(torch.nn.utils.clip_grad_norm_(params, limit if math.isfinite(limit) else math.inf))
        if not math.isfinite(norm):
            return norm
        if norm > limit:
            self.num_clipped += 1
        if self.mode == "adaptive":
            self.history.append(min(norm, limit))
        return norm

    def state_dict(self) -> dict:
        return {"mode": self.mode, "history": list(self.history), "num_clipped": self.num_clipped,
                "num_skipped": self.num_skipped}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque((float(v) for v in state["history"]), maxlen=self.window)
        self.num_clipped = int(state["num_clipped"])
        self.num_skipped = int(state.get("num_skipped", 0))
