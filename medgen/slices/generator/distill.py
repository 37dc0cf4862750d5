"""Progressive distillation of the preview sampler (Salimans & Ho 2022), guided (Meng et al. 2023): a student
UNet learns to take in ONE deterministic DDIM step what the teacher takes in two, round after round
(64 -> 32 -> 16 -> 8 steps). The first teacher is the base UNet *with* classifier-free guidance (two branches
per step, `DEFAULT_GUIDANCE`); the student is conditional only (one branch), so a distilled step costs half a
guided one as well.

Steps use the "trailing" timestep grid ``t_i = (i + 1) T / N - 1`` (the student's grid is every other teacher
point) and end on the clean image (alpha = 1). The student predicts noise, trained through the x-target of
the paper: x* such that one DDIM step from z_t lands where the teacher's two steps land, loss weighted by
max(SNR, 1) on x.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from medgen.diffusion.guidance import Guidance, combine, expand_conditions
from medgen.engine.optim import one_cycle_adamw, optimizer_step
from medgen.slices.generator.autoencoder import vae_encode
from medgen.slices.generator.data import PreviewPairs, batch_inputs
from medgen.slices.generator.model import DEFAULT_GUIDANCE, SlicePreviewModel, pool_to_latent, predict_noise
from medgen.slices.generator.train import noise_schedule


def grid(n_steps: int, n_train: int) -> list[int]:
    """Trailing timesteps, high to low."""
    return [int(round((i + 1) * n_train / n_steps)) - 1 for i in range(n_steps)][::-1]


def ddim_move(z, eps, alpha_t, alpha_s):
    """Deterministic DDIM from noise level t to s (alphas are sqrt(alpha_bar), shape (B, 1, 1, 1))."""
    sigma_t, sigma_s = (1 - alpha_t ** 2).sqrt(), (1 - alpha_s ** 2).sqrt()
    x = (z - sigma_t * eps) / alpha_t
    return alpha_s * x + sigma_s * eps


def _alpha(scheduler, t: torch.Tensor) -> torch.Tensor:
    """sqrt(alpha_bar_t) (B, 1, 1, 1); t < 0 means clean (1)."""
    bars = scheduler.alphas_cumprod
    out = torch.where(t >= 0, bars[t.clamp(min=0)], torch.ones(()))
    return out.sqrt()[:, None, None, None]


class GuidedTeacher:
    """eps of the base UNet with guidance (all active branches, one batched forward)."""

    def __init__(self, unet, guidance: Guidance):
        self.unet, self.guidance = unet, guidance

    def __call__(self, z, t, layout, encoding, null, density, micro):
        conditions = expand_conditions(encoding, null, density, self.guidance)
        n = conditions["pooled"].shape[0] // z.shape[0]
        eps = predict_noise(self.unet, z.repeat(n, 1, 1, 1), t.repeat(n), layout.repeat(n, 1, 1, 1), conditions,
                            np.tile(micro, (n, 1)))
        return combine(eps, z.shape[0], self.guidance, has_density=True)


class ConditionalStudent:
    """eps of a distilled UNet: the full condition only (no guidance branches)."""

    def __init__(self, unet):
        self.unet = unet

    def __call__(self, z, t, layout, encoding, null, density, micro):
        conditions = expand_conditions(encoding, null, density, Guidance(text=1.0, density=1.0))
        return predict_noise(self.unet, z, t, layout, conditions, micro)


def distill_round(model: SlicePreviewModel, teacher, student_unet, pairs: PreviewPairs, *, student_steps: int,
                  steps: int, batch_size: int = 16, lr: float = 2e-4, seed: int = 0, progress: bool = True) -> dict:
    """Train `student_unet` in place to do in `student_steps` what `teacher` does in twice as many."""
    n_train = int(model.config["num_train_timesteps"])
    scheduler = noise_schedule(model.config)
    teacher_grid = grid(2 * student_steps, n_train)[::-1]  # low to high
    optimizer, schedule, params = one_cycle_adamw(student_unet.parameters(), lr=lr, steps=steps)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    student = ConditionalStudent(student_unet)
    null = model.text_encoder.empty_encoding(1)
    losses, start = [], time.time()
    student_unet.train()
    for _ in tqdm(range(steps), desc=f"distil -> {student_steps} steps", unit="step", disable=not progress):
        batch = batch_inputs(pairs, rng.integers(0, len(pairs), batch_size), rng=rng)
        captions = [(pairs.captions_zh if rng.random() < 0.5 else pairs.captions_en)[i] for i in batch["index"]]
        with torch.no_grad():
            x = vae_encode(model.vae, batch["image"], model.scale)
            encoding = model.text_encoder(captions)
            layout = pool_to_latent(batch["layout"], model.factor)
            density = torch.tensor(batch["micro"][:, -1], dtype=torch.float32)
            density[density < 0] = float("nan")  # no lesion in the slice: no density condition
            j = torch.from_numpy(rng.integers(0, student_steps, batch_size))  # student step from s_j
            t = torch.tensor([teacher_grid[2 * k + 1] for k in j.tolist()])
            t_mid = torch.tensor([teacher_grid[2 * k] for k in j.tolist()])
            t_end = torch.tensor([teacher_grid[2 * k - 1] if k > 0 else -1 for k in j.tolist()])
            a_t, a_mid, a_end = _alpha(scheduler, t), _alpha(scheduler, t_mid), _alpha(scheduler, t_end)
            z = a_t * x + (1 - a_t ** 2).sqrt() * torch.randn_like(x)
            z_mid = ddim_move(z, teacher(z, t, layout, encoding, null, density, batch["micro"]), a_t, a_mid)
            z_end = ddim_move(z_mid, teacher(z_mid, t_mid, layout, encoding, null, density, batch["micro"]), a_mid,
                              a_end)
            ratio = (1 - a_end ** 2).sqrt() / (1 - a_t ** 2).sqrt()
            x_target = (z_end - ratio * z) / (a_end - ratio * a_t)
            weight = torch.clamp(a_t ** 2 / (1 - a_t ** 2), min=1.0)
        eps = student(z, t, layout, encoding, null, density, batch["micro"])
        x_pred = (z - (1 - a_t ** 2).sqrt() * eps) / a_t
        loss = (weight * (x_pred - x_target) ** 2).mean()
        losses.append(optimizer_step(loss, optimizer, schedule, params))
    student_unet.eval()
    return {"student_steps": student_steps, "steps": steps, "loss_first50": float(np.mean(losses[:50])),
            "loss_last50": float(np.mean(losses[-50:])), "seconds": round(time.time() - start, 1)}


def progressive_distillation(model: SlicePreviewModel, pairs: PreviewPairs, *, teacher_steps: int = 64,
                             student_steps: int = 8, steps_per_round: int = 400, guidance: Guidance | None = None,
                             progress: bool = True) -> tuple[torch.nn.Module, list[dict]]:
    """Rounds from the guided base (`teacher_steps`) down to `student_steps`; returns the student and records."""
    if teacher_steps % student_steps or (teacher_steps // student_steps) & (teacher_steps // student_steps - 1):
        raise ValueError(f"`teacher_steps` / `student_steps` must be a power of two, got {teacher_steps}, {student_steps}")
    teacher = GuidedTeacher(model.base, guidance or DEFAULT_GUIDANCE)
    student_unet, records, n = copy.deepcopy(model.base), [], teacher_steps // 2
    while n >= student_steps:
        records.append(distill_round(model, teacher, student_unet, pairs, student_steps=n, steps=steps_per_round,
                                     seed=len(records), progress=progress))
        teacher = ConditionalStudent(copy.deepcopy(student_unet).eval())
        n //= 2
    return student_unet, records


@torch.no_grad()
def sample_student(model: SlicePreviewModel, student_unet, layout, encoding, null, density, micro, *, steps: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents from the distilled student: `steps` deterministic DDIM steps on the trailing grid, one branch."""
    scheduler = noise_schedule(model.config)
    b = layout.shape[0]
    size = int(model.config["size"]) // model.factor
    z = torch.randn((b, int(model.config["latent_channels"]), size, size), generator=generator)
    student = ConditionalStudent(student_unet)
    points = grid(steps, int(model.config["num_train_timesteps"]))
    density = torch.full((b,), float("nan")) if density is None else torch.as_tensor(density, dtype=torch.float32)
    for k, t in enumerate(points):
        t_now = torch.full((b,), t)
        t_next = torch.full((b,), points[k + 1] if k + 1 < len(points) else -1)
        eps = student(z, t_now, layout, encoding, null, density, micro)
        z = ddim_move(z, eps, _alpha(scheduler, t_now), _alpha(scheduler, t_next))
    return z
