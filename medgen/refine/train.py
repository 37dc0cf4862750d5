"""Train the learned x2 refiner stages on phantom patches built directly at the finer spacing.

For stage k the target is a phantom patch at ``native_spacing / 2**k`` mm (the phantom is defined in mm,
so a small off-centre grid is a patch of a whole subject); its input is the same patch averaged down x2
(partial-volume, as a coarser scanner grid sees it) and upsampled back by trilinear interpolation. Half
the patches are centred on a lesion, so lesion edges are learned, not only lung and body edges. The loss
(L1 in HU / 1000) skips a border of the network's reach, where a patch has no context. Validation patches
come from other subjects; the summary compares the refiner with trilinear interpolation on them (the
baseline the stage must beat to be worth its time).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medgen.engine.common import seed_everything
from medgen.engine.optim import warmup_cosine_schedule
from medgen.phantom.chest import make_phantom
from medgen.refine.model import HU_SCALE, LearnedStage, RefinerNet, upsample2

# Patch centres (RAS mm): the thorax of a phantom on its 320 mm field of view.
CENTRE_LOW, CENTRE_HIGH = np.array([-110.0, -70.0, -110.0]), np.array([110.0, 60.0, 100.0])
VAL_SEED_OFFSET = 1_000_000  # train and val patch seeds: medgen.seeds "refiner.train" / "refiner.val"


@dataclass
class RefinerTrainConfig:
    """Args:
        out: refiner folder (``stage_<k>/`` each).
        native_spacing: the base model's spacing (mm); stage k refines to native_spacing / 2**k.
        stages: how many x2 stages (1-3).
        patch: target patch size (voxels per axis, even).
        n_patches / n_val: training / validation patches per stage.
        steps, batch_size, lr: optimisation per stage (AdamW, cosine decay).
        channels, blocks: `RefinerNet` size.
    """

    out: str
    native_spacing: float = 5.0
    stages: int = 3
    patch: int = 32
    n_patches: int = 600
    n_val: int = 48
    steps: int = 1200
    batch_size: int = 4
    lr: float = 1e-3
    channels: int = 16
    blocks: int = 3
    seed: int = 0

    def __post_init__(self):
        if not 1 <= int(self.stages) <= 3:
            raise ValueError(f"`stages` must be 1, 2 or 3, got {self.stages}")
        if self.patch < 8 or self.patch % 2:
            raise ValueError(f"`patch` must be an even number >= 8, got {self.patch}")
        for name in ("n_patches", "n_val", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}")


def make_patch(seed: int, spacing: float, size: int) -> np.ndarray:
    """One phantom patch (HU float32, `size`^3 at `spacing` mm), centred on a lesion half of the time."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(CENTRE_LOW, CENTRE_HIGH)
    if rng.random() < 0.5:
        lesions = make_phantom(None, shape=8, spacing=40.0, seed=seed).findings.lesions  # cheap: where they lie
        if lesions:
            centre = np.asarray(lesions[int(rng.integers(len(lesions)))].center_mm) + rng.normal(0, 4.0, 3) * spacing
    case = make_phantom(None, shape=size, spacing=spacing, seed=seed, center_mm=centre)
    return np.asarray(case.image.array, dtype=np.float32)


def pair(patches: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches (N, P, P, P) HU -> (trilinear upsample of the x2 average, target), both (N, 1, P, P, P) / 1000."""
    target = torch.from_numpy(patches)[:, None] / HU_SCALE
    return upsample2(F.avg_pool3d(target, 2)), target


def _interior(x: torch.Tensor, margin: int) -> torch.Tensor:
    return x[..., margin:-margin, margin:-margin, margin:-margin] if margin else x


def compare_on(net: RefinerNet, patches: np.ndarray) -> dict:
    """Interior MAE (HU) of the refiner and of trilinear interpolation against the fine truth, overall and
    on edge voxels (the 10 % of largest true gradient)."""
    inputs, target = pair(patches)
    with torch.no_grad():
        refined = torch.cat([net(inputs[i:i + 8]) for i in range(0, len(inputs), 8)])
    margin = net.reach
    truth, tri, ref = (_interior(t, margin) * HU_SCALE for t in (target, inputs, refined))
    grad = sum(g.abs() for g in torch.gradient(truth, dim=(2, 3, 4)))
    edges = grad >= torch.quantile(grad.flatten()[:: max(1, grad.numel() // 1_000_000)], 0.9)
    return {"mae_hu": {"refiner": float((ref - truth).abs().mean()), "trilinear": float((tri - truth).abs().mean())},
            "edge_mae_hu": {"refiner": float((ref - truth).abs()[edges].mean()),
                            "trilinear": float((tri - truth).abs()[edges].mean())}}


def train_stage(config: RefinerTrainConfig, stage: int, *, progress: bool = True) -> dict:
    """Train stage `stage` (1-based), save it under ``out/stage_<stage>``; returns its summary."""
    spacing = config.native_spacing / 2 ** stage
    base = config.seed * 10_000_000 + stage * 100_000
    build = tqdm(range(config.n_patches + config.n_val), desc=f"patches @ {spacing:g} mm", disable=not progress,
                 leave=False, mininterval=2)
    made = [make_patch(base + i if i < config.n_patches else base + VAL_SEED_OFFSET + i, spacing, config.patch)
            for i in build]
    train, val = np.stack(made[:config.n_patches]), np.stack(made[config.n_patches:])
    net = RefinerNet(config.channels, config.blocks)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = warmup_cosine_schedule(optimizer, 0, config.steps)  # cosine from the first step, no warm-up
    rng = np.random.default_rng(config.seed + stage)
    started, history, running = time.time(), [], []
    bar = tqdm(range(config.steps), desc=f"refiner stage {stage}", disable=not progress, mininterval=5)
    for step in bar:
        batch = train[rng.integers(len(train), size=config.batch_size)]
        for axis in (1, 2, 3):  # flips: edges have no preferred direction at this scale
            if rng.random() < 0.5:
                batch = np.flip(batch, axis)
        inputs, target = pair(np.ascontiguousarray(batch))
        loss = (_interior(net(inputs) - target, net.reach)).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            history.append({"step": step + 1, "l1_hu": float(np.mean(running)) * HU_SCALE})
            bar.set_postfix(l1_hu=f"{history[-1]['l1_hu']:.1f}")
            running = []
    net.eval()
    LearnedStage(net, spacing_mm=spacing).save_pretrained(Path(config.out) / f"stage_{stage}")
    return {"stage": stage, "spacing_mm": spacing, "train_seconds": round(time.time() - started, 1),
            "validation": compare_on(net, val), "history": history}


def train_refiner(config: RefinerTrainConfig, *, progress: bool = True) -> dict:
    """Train every stage; writes ``out/training_summary.json`` and returns it."""
    seed_everything(config.seed)
    started = time.time()
    stages = [train_stage(config, k, progress=progress) for k in range(1, config.stages + 1)]
    summary = {"config": asdict(config), "train_seconds": round(time.time() - started, 1), "stages": stages}
    (Path(config.out) / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
