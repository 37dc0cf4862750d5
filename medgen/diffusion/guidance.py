"""Two-condition classifier-free guidance (text, then density on top of text).

    eps = eps(∅,∅) + w_t · (eps(t,∅) − eps(∅,∅)) + w_d · (eps(t,d) − eps(t,∅))
        = (1 − w_t) · eps(∅,∅) + (w_t − w_d) · eps(t,∅) + w_d · eps(t,d)

Branches, in this order along dim 0 (each B long): "uncond" (∅,∅) = empty-string text + density NaN;
"text" (t,∅) = the report + density NaN; "full" (t,d) = the report + the requested density.
A branch whose coefficient in the second form is 0 is not computed (e.g. w_t = w_d = 1 -> only
"full"; no density -> "full" equals "text", so eps = (1 − w_t) eps(∅,∅) + w_t eps(t,∅)).
`expand_conditions` and `combine` use the same rule (`active_branches`); pass them the same
guidance and density-presence.  With ``guidance=None`` `expand_conditions` builds every branch that
exists (3, or 2 without density), which `combine` recognises from the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

__all__ = [
    "Guidance",
    "TextEncodingLike",
    "active_branches",
    "branch_coefficients",
    "combine",
    "expand_conditions",
]

BRANCHES = ("uncond", "text", "full")


@runtime_checkable
class TextEncodingLike(Protocol):
    """Anything with ``token_states`` (B, L, D), ``attention_mask`` (B, L) and ``pooled`` (B, D)."""

    token_states: torch.Tensor
    attention_mask: torch.Tensor
    pooled: torch.Tensor


@dataclass
class Guidance:
    """Guidance weights: `text` (w_t) for the report vs nothing, `density` (w_d) for density vs report only."""

    text: float = 4.0
    density: float = 2.0


def branch_coefficients(guidance: Guidance, has_density: bool) -> dict[str, float]:
    """Coefficient of each branch's prediction in the guided estimate (they sum to 1)."""
    w_t, w_d = float(guidance.text), float(guidance.density)
    if not has_density:
        return {"uncond": 1.0 - w_t, "text": w_t}
    return {"uncond": 1.0 - w_t, "text": w_t - w_d, "full": w_d}


def active_branches(guidance: Guidance | None, has_density: bool) -> tuple[str, ...]:
    """Branches that must be evaluated (non-zero coefficient), in canonical order."""
    if guidance is None:
        return BRANCHES if has_density else BRANCHES[:2]
    coeffs = branch_coefficients(guidance, has_density)
    active = tuple(b for b in BRANCHES if coeffs.get(b, 0.0) != 0.0)
    return active or (("full",) if has_density else ("text",))


def _pad_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    pad = length - x.shape[1]
    if pad <= 0:
        return x
    # pad (…, L, D) or (…, L) on the right of the token axis with zeros (= padding, masked)
    return F.pad(x, (0, 0, 0, pad)) if x.ndim == 3 else F.pad(x, (0, pad))


def _batch(t: torch.Tensor, b: int, name: str) -> torch.Tensor:
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:])
    raise ValueError(f"{name} has batch {t.shape[0]}, expected {b} or 1")


def expand_conditions(
    encoding: TextEncodingLike,
    null_encoding: TextEncodingLike,
    density: torch.Tensor | None,
    guidance: Guidance | None = None,
) -> dict[str, torch.Tensor]:
    """UNet condition kwargs (``token_states``, ``attention_mask``, ``pooled``, ``density``) for the active branches.

    `encoding` has batch B; `null_encoding` (the empty-string encoding) batch B or 1; `density` (B,) in
    [0, 1] (NaN entries = unknown) or None.  Token sequences of different lengths are zero-padded with
    mask 0 to a common length (padding is ignored by the UNet, so this is exact).
    Returns tensors of batch ``len(active_branches(guidance, density is not None)) * B``.
    """
    b = encoding.pooled.shape[0]
    device = encoding.pooled.device
    has_density = density is not None
    branches = active_branches(guidance, has_density)
    length = max(encoding.token_states.shape[1], null_encoding.token_states.shape[1])

    def parts(enc):
        return (
            _pad_tokens(_batch(enc.token_states, b, "token_states"), length),
            _pad_tokens(_batch(enc.attention_mask, b, "attention_mask"), length).to(device),
            _batch(enc.pooled, b, "pooled"),
        )

    text = parts(encoding)
    null = tuple(t.to(device=device, dtype=s.dtype) for t, s in zip(parts(null_encoding), text, strict=True))
    nan = torch.full((b,), float("nan"), device=device)
    dens = (
        torch.as_tensor(density, dtype=torch.float32, device=device).reshape(-1).expand(b)
        if has_density
        else nan
    )
    table = {"uncond": (null, nan), "text": (text, nan), "full": (text, dens)}
    chosen = [table[name] for name in branches]
    return {
        "token_states": torch.cat([c[0][0] for c in chosen], dim=0),
        "attention_mask": torch.cat([c[0][1] for c in chosen], dim=0),
        "pooled": torch.cat([c[0][2] for c in chosen], dim=0),
        "density": torch.cat([c[1] for c in chosen], dim=0),
    }


def combine(eps: torch.Tensor, batch: int, guidance: Guidance, *, has_density: bool = True) -> torch.Tensor:
    """Guided prediction (B, ...) from the stacked branch predictions of `expand_conditions`.

    ``eps.shape[0] == 3 * batch`` always means all three branches; otherwise the branches are
    ``active_branches(guidance, has_density)`` (2 branches with ``has_density=False`` and no
    guidance-based skipping are "uncond", "text").
    """
    n = eps.shape[0] // batch
    if n * batch != eps.shape[0]:
        raise ValueError(f"eps batch {eps.shape[0]} is not a multiple of {batch}")
    if n == 3:
        branches, coeffs = BRANCHES, branch_coefficients(guidance, True)
    else:
        branches = active_branches(guidance, has_density)
        coeffs = branch_coefficients(guidance, has_density)
        if len(branches) != n:
            all_branches = active_branches(None, has_density)
            if len(all_branches) != n:
                raise ValueError(
                    f"eps holds {n} branches but guidance {guidance} (has_density={has_density}) needs {len(branches)}"
                )
            branches = all_branches
    if len(branches) == 1:
        return eps
    chunks = eps.split(batch, dim=0)
    out = None
    for name, chunk in zip(branches, chunks, strict=True):
        c = coeffs.get(name, 0.0)
        if c == 0.0:
            continue
        out = chunk * c if out is None else out + chunk * c
    assert out is not None
    return out
