"""Stage 0v of the slice reader (and the slice CLIP's optional first stage): the vision tower learns *where things are* from the layout label map under
each training slice, before any text.

A caption gives one weak signal per slice (a few answer tokens); the label map gives one per patch. Each patch
token of the tower is asked, through a throw-away linear head, what fraction of its pixels are lesion,
effusion, emphysema and each lobe, and the mean target density of its lesion pixels. This is dense supervision
of the kind segmentation pretraining gives (the tower is then a feature extractor that has seen every lesion),
not a detector bolted onto the reader: after this stage the head is dropped and the LLaVA stages run as before.
Measured on the reader's held-out slices (`medgen train slices reader`, record "held_out"): without it the
instruction-tuned reader collapsed to "no lesion" (presence 23 % EN).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medgen.engine.optim import one_cycle_adamw, optimizer_step
from medgen.findings import LABELS, LOBES
from medgen.layout.labels import EMPHYSEMA_LABEL, FIRST_LESION_LABEL

# per-patch fractions the head predicts (lesion first: the density target is masked by it)
TARGETS = ("lesion", "effusion", "emphysema", *LOBES)


def patch_targets(labels, density, patch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P, len(TARGETS)) pixel fractions and (N, P) mean lesion density per patch (row-major patches, as the
    CLIP tower orders them) of slices the tower reads resized to `size` px.

    Args:
        labels: (N, H, W) label maps on the slices' own grid: layout labels (lesions from
            `FIRST_LESION_LABEL`) or phantom labels (`LABELS["lesion"]`).
        density: (N, H, W) target density inside lesions, or None (the density target is then 0).
    """
    labels = torch.as_tensor(np.asarray(labels).astype(np.int64))
    lesion = (labels >= FIRST_LESION_LABEL) | (labels == LABELS["lesion"])
    masks = [lesion, labels == LABELS["effusion"], labels == EMPHYSEMA_LABEL,
             *(labels == LABELS[lobe] for lobe in LOBES)]
    grid = size // patch
    stacked = torch.stack(masks, 1).float()                                             # (N, K, H, W)
    fractions = F.adaptive_avg_pool2d(stacked, grid).flatten(2).transpose(1, 2)         # (N, P, K)
    if density is None:
        return fractions, torch.zeros(fractions.shape[:2])
    dens = torch.as_tensor(np.asarray(density, np.float32))[:, None] * stacked[:, :1]
    lesion_density = F.adaptive_avg_pool2d(dens, grid).flatten(1) / fractions[..., 0].clamp_min(1e-6)
    return fractions, torch.where(fractions[..., 0] > 0, lesion_density, torch.zeros_like(lesion_density))


def lesion_weighted_index(has_lesion: np.ndarray, rng: np.random.Generator, n: int, share: float = 0.5):
    """`n` indices with about `share` of them slices that show a lesion (most slices show none, and a
    reader trained on the raw mix learns to say "no")."""
    has_lesion = np.asarray(has_lesion, bool)
    if has_lesion.all() or not has_lesion.any():
        return rng.integers(0, len(has_lesion), n)
    weights = np.where(has_lesion, share / has_lesion.sum(), (1 - share) / (~has_lesion).sum())
    return rng.choice(len(has_lesion), size=n, p=weights)


def ground_vision(tower, pixels: torch.Tensor, labels: np.ndarray, density: np.ndarray, has_lesion, *,
                  steps: int, batch_size: int = 32, lr: float = 1e-3, progress: bool = True, seed: int = 3) -> dict:
    """Train a CLIP vision tower (the slice reader's or the slice CLIP's) and a temporary linear head on
    per-patch label fractions; returns the record."""
    fractions, lesion_density = patch_targets(labels, density, tower.config.patch_size, pixels.shape[-1])
    head = torch.nn.Linear(tower.config.hidden_size, len(TARGETS) + 1)
    params = [*tower.parameters(), *head.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer, schedule, params = one_cycle_adamw(params, lr=lr, steps=steps, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    tower.train()
    losses, start = [], time.time()
    for _ in tqdm(range(steps), desc="slice reader stage 0v (vision grounding)", unit="step", disable=not progress):
        index = torch.as_tensor(lesion_weighted_index(has_lesion, rng, batch_size))
        tokens = tower(pixels[index]).last_hidden_state[:, 1:]                         # drop CLS, as LLaVA does
        out = head(tokens)
        target, dens = fractions[index], lesion_density[index]
        loss = F.binary_cross_entropy_with_logits(out[..., :-1], target)
        inside = target[..., 0] > 0
        if inside.any():
            loss = loss + F.mse_loss(out[..., -1][inside], dens[inside])
        losses.append(optimizer_step(loss, optimizer, schedule, params))
    tower.eval()
    return {"steps": steps, "lr": lr, "trained": ["vision"], "targets": [*TARGETS, "lesion density"],
            "loss_first50": float(np.mean(losses[:50])), "loss_last50": float(np.mean(losses[-50:])),
            "seconds": round(time.time() - start, 1)}
