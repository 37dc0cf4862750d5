"""CLIP-style report <-> volume model for the alignment metric (and realism features).

Text tower: the project's `TextEncoder` (frozen; its pooled vector (B, D)) + a small MLP projection.
Image tower: a small strided 3D CNN on the volume's network intensity (HU -> [-1, 1]), resampled to a
fixed cube, global average + max pooled to features (B, F), then projected.  Both embeddings are
L2-normalised (B, E).  Loss = symmetric InfoNCE (learned temperature) + an attribute term: from the
image features, BCE on lesion-per-lobe / effusion side / emphysema / normal and MSE on the largest
lesion's density (a regression term that gives the small data set a dense signal).

It is trained only on real phantom pairs (a manifest's train split, or phantoms built on the fly with
train-phrasing reports), never on generated volumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.findings import LOBES, Findings
from medgen.io.weights import PretrainedMixin
from medgen.volume import Volume, hu_to_intensity

__all__ = ["AlignmentModel", "attribute_targets", "pooled_text", "train_alignment", "volume_batch",
           "volume_retrieval_metrics"]

N_ATTRIBUTES = len(LOBES) + 4  # lesion per lobe, effusion left/right, emphysema, normal


def attribute_targets(findings: Findings) -> tuple[np.ndarray, float]:
    """Binary attributes (N_ATTRIBUTES,) and the largest lesion's density (NaN when there is none)."""
    lobes = {lesion.lobe for lesion in findings.lesions}
    effusion = findings.effusion
    sides = set() if effusion is None else ({"left", "right"} if effusion.side == "bilateral" else {effusion.side})
    binary = [lobe in lobes for lobe in LOBES] + ["left" in sides, "right" in sides,
                                                    findings.emphysema is not None, findings.is_normal]
    largest = max(findings.lesions, key=lambda lesion: lesion.diameter_mm, default=None)
    return np.asarray(binary, dtype=np.float32), (float("nan") if largest is None else float(largest.density))


def volume_batch(volumes: Sequence[Volume], size: int) -> torch.Tensor:
    """Volumes (HU) -> (B, 1, size, size, size) float32 network intensity (trilinear resampling)."""
    arrays = [torch.as_tensor(np.asarray(v.array, dtype=np.float32))[None, None] for v in volumes]
    out = []
    for x in arrays:
        x = hu_to_intensity(x)
        if tuple(x.shape[2:]) != (size,) * 3:
            x = F.interpolate(x, size=(size,) * 3, mode="trilinear", align_corners=False)
        out.append(x)
    return torch.cat(out, 0)


class ImageTower(nn.Module):
    """(B, 1, S, S, S) -> (B, 2 * channels[-1]) features: strided conv blocks, then mean and max pooling."""

    def __init__(self, channels: Sequence[int] = (8, 16, 32, 64)):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv3d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(4, c), c), nn.SiLU(),
                       nn.Conv3d(c, c, 3, padding=1), nn.GroupNorm(min(4, c), c), nn.SiLU()]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.out_dim = 2 * int(channels[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)


class AlignmentModel(PretrainedMixin, nn.Module):
    """Text projection + image tower + image projection + attribute head; config = constructor kwargs.

    Saved (`save_pretrained`) as ``config.json`` + ``model.safetensors``.
    """

    def __init__(self, *, text_dim: int, embed_dim: int = 64, input_size: int = 64,
                 channels: Sequence[int] = (8, 16, 32, 64)):
        super().__init__()
        self.config = {"text_dim": int(text_dim), "embed_dim": int(embed_dim), "input_size": int(input_size),
                       "channels": [int(c) for c in channels]}
        self.input_size = int(input_size)
        self.text_proj = nn.Sequential(nn.Linear(text_dim, 128), nn.SiLU(), nn.Linear(128, embed_dim))
        self.image = ImageTower(channels)
        self.image_proj = nn.Linear(self.image.out_dim, embed_dim)
        self.attributes = nn.Linear(self.image.out_dim, N_ATTRIBUTES + 1)  # + density regression
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def image_features(self, volumes: Sequence[Volume], batch_size: int = 8) -> torch.Tensor:
        """(N, F) image-tower features of volumes (no grad)."""
        with torch.no_grad():
            return torch.cat([self.image(volume_batch(volumes[i:i + batch_size], self.input_size))
                              for i in range(0, len(volumes), batch_size)], 0)

    def embed_images(self, volumes: Sequence[Volume]) -> torch.Tensor:
        """(N, E) L2-normalised image embeddings."""
        with torch.no_grad():
            return F.normalize(self.image_proj(self.image_features(volumes)), dim=-1)

    def embed_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled text (N, D) -> (N, E) L2-normalised text embeddings."""
        return F.normalize(self.text_proj(pooled.float()), dim=-1)


def pooled_text(text_encoder, reports: list[str], batch_size: int = 16) -> torch.Tensor:
    """Pooled text features (N, D) of the frozen encoder, float32 on the CPU."""
    with torch.no_grad():
        return torch.cat([text_encoder(reports[i:i + batch_size]).pooled.float().cpu()
                          for i in range(0, len(reports), batch_size)], 0)


def train_alignment(text_encoder, volumes: Sequence[Volume], reports: Sequence[Sequence[str]],
                    findings: Sequence[Findings], *, steps: int = 300, batch_size: int = 16, lr: float = 2e-3,
                    input_size: int = 64, attribute_weight: float = 1.0, seed: int = 0) -> tuple[AlignmentModel, dict]:
    """Train on real pairs: subject i has volume i, findings i and one or more reports (one drawn per step).

    Returns the model (eval mode, CPU) and a history with the first and last losses.
    """
    if not (len(volumes) == len(reports) == len(findings)) or len(volumes) < 2:
        raise ValueError(f"need >= 2 subjects with one volume, report list and findings each, got "
                         f"{len(volumes)}, {len(reports)}, {len(findings)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    flat = [r for rs in reports for r in rs]
    owner = np.asarray([i for i, rs in enumerate(reports) for _ in rs])
    text = pooled_text(text_encoder, flat)  # frozen encoder: computed once
    images = volume_batch(volumes, input_size)
    targets = [attribute_targets(f) for f in findings]
    binary = torch.as_tensor(np.stack([t[0] for t in targets]))
    density = torch.as_tensor([t[1] for t in targets], dtype=torch.float32)
    model = AlignmentModel(text_dim=text.shape[1], input_size=input_size)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batch_size = min(int(batch_size), len(volumes))
    losses = []
    for _ in range(int(steps)):
        idx = torch.as_tensor(rng.choice(len(volumes), size=batch_size, replace=False))
        picks = [int(rng.choice(np.flatnonzero(owner == int(i)))) for i in idx]
        features = model.image(images[idx])
        v = F.normalize(model.image_proj(features), dim=-1)
        t = model.embed_text(text[picks])
        logits = model.logit_scale.clamp(max=4.6).exp() * t @ v.T
        labels = torch.arange(batch_size)
        contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        pred = model.attributes(features)
        attr = F.binary_cross_entropy_with_logits(pred[:, :N_ATTRIBUTES], binary[idx])
        has = ~torch.isnan(density[idx])
        if has.any():
            attr = attr + F.mse_loss(torch.sigmoid(pred[has, -1]), density[idx][has])
        loss = contrastive + attribute_weight * attr
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    k = max(1, len(losses) // 10)
    return model, {"steps": int(steps), "n_subjects": len(volumes), "n_reports": len(flat),
                   "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:]))}


def volume_retrieval_metrics(text_emb: torch.Tensor, image_emb: torch.Tensor,
                             ks: Sequence[int] = (1, 5)) -> dict:
    """Report -> volume retrieval: query i's correct volume is row i of `image_emb` (ties count in the
    query's favour; `medgen.slices.clip.retrieval_metrics` is the slice CLIP's, ties against the model).

    Returns top-k accuracies, chance levels (k / N) and the mean rank (1 = best).
    """
    if text_emb.shape[0] != image_emb.shape[0]:
        raise ValueError(f"{text_emb.shape[0]} reports but {image_emb.shape[0]} volumes")
    sims = text_emb @ image_emb.T
    correct = sims.diagonal()[:, None]
    rank = 1 + (sims > correct).sum(dim=1)  # ties count in the query's favour
    n = sims.shape[0]
    out = {f"top{k}": float((rank <= k).float().mean()) for k in ks}
    out.update({f"chance_top{k}": min(1.0, k / n) for k in ks})
    out["mean_rank"] = float(rank.float().mean())
    out["n_candidates"] = n
    return out
