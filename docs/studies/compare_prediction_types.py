"""Why phantom-64 predicts v, not epsilon: the clean-latent error each trained UNet implies, per timestep.

With the MONAI 3D-LDM schedule (scaled-linear betas 0.0015..0.0195, 1000 steps) the signal-to-noise ratio
at t = 999 is 1.4e-4.  An epsilon model's clean-latent estimate x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)
multiplies every error in eps by sqrt((1 - a) / a) (~80 at t = 999), so the global layout that the first
sampling steps decide comes out as amplified noise.  v-prediction keeps that estimate bounded.

For each pipeline: noise held-out latents to t, predict, convert to x0, report the mean squared error;
"mean image" is the error of always answering the average latent (the floor a useful model beats).

    .venv/bin/python docs/studies/compare_prediction_types.py --latents runs/phantom-64-eps/latents \
        --pipelines epsilon=runs/phantom-64-eps/pipeline v=runs/exp-v/pipeline --out docs/studies/prediction_type.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medgen.pipelines import ReportToVolumePipeline
from medgen.training.latents import LatentDataset

TIMESTEPS = (100, 300, 500, 700, 800, 900, 999)


@torch.no_grad()
def x0_errors(pipe, latents: torch.Tensor, reports: list[str], densities: torch.Tensor, seed: int = 0) -> dict:
    """MSE of the clean latent implied by the UNet's output, per timestep, over `latents` (N, C, *S)."""
    sched = pipe.scheduler
    kind = sched.prediction_type
    enc = pipe.text_encoder(reports)
    gen = torch.Generator().manual_seed(seed)
    errors = {}
    for t in TIMESTEPS:
        noise = torch.randn(latents.shape, generator=gen)
        tt = torch.full((latents.shape[0],), t, dtype=torch.long)
        noisy = sched.add_noise(latents, noise, tt)
        out = pipe.unet(noisy, tt, token_states=enc.token_states, attention_mask=enc.attention_mask,
                        pooled=enc.pooled, density=densities).float()
        a = sched.alphas_cumprod[t]
        if kind == "epsilon":
            x0 = (noisy - (1 - a).sqrt() * out) / a.sqrt()
        elif kind == "v_prediction":
            x0 = a.sqrt() * noisy - (1 - a).sqrt() * out
        else:
            raise ValueError(f"unsupported prediction type {kind!r}")
        errors[t] = float(((x0 - latents) ** 2).mean())
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", required=True, help="latent cache folder shared by the pipelines")
    parser.add_argument("--pipelines", nargs="+", required=True, help="NAME=FOLDER pairs")
    parser.add_argument("--n", type=int, default=32, help="held-out (val) latents")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    data = LatentDataset(args.latents, "val")
    n = min(args.n, len(data))
    items = [data[i] for i in range(n)]
    latents = torch.stack([it["latent"] for it in items])
    reports = [it["report"] for it in items]
    densities = torch.tensor([it["density"] for it in items])
    floor = float(((latents - latents.mean(0, keepdim=True)) ** 2).mean())

    rows = {}
    for spec in args.pipelines:
        name, folder = spec.split("=", 1)
        pipe = ReportToVolumePipeline.from_pretrained(folder)
        steps = pipe.config.get("trained_steps", "?")
        rows[name] = (x0_errors(pipe, latents, reports, densities), folder, steps)

    lines = [
        "# Clean-latent error of epsilon vs v prediction (phantom-64 latents)",
        "",
        f"Command: `.venv/bin/python docs/studies/compare_prediction_types.py --latents {args.latents} "
        f"--pipelines {' '.join(args.pipelines)} --n {args.n} --out {args.out}`",
        "",
        f"{n} held-out latents, one noise draw per timestep (seed 0). MSE of the implied clean latent x0; "
        f"'mean image' = error of answering the average latent ({floor:.3f}).",
        "",
        "| model | " + " | ".join(f"t={t}" for t in TIMESTEPS) + " |",
        "| --- | " + " | ".join("---" for _ in TIMESTEPS) + " |",
    ]
    for name, (errs, folder, _) in rows.items():
        lines.append(f"| {name} (`{folder}`) | " + " | ".join(f"{errs[t]:.3f}" for t in TIMESTEPS) + " |")
    lines.append("| mean image | " + " | ".join(f"{floor:.3f}" for _ in TIMESTEPS) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
