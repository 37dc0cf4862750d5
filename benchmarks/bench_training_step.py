"""Time one training step of the VAE and of the LDM at a config's sizes (default: configs/phantom-64.yaml).

    python benchmarks/bench_training_step.py [--config configs/phantom-64.yaml] [--steps 5] [--warmup 2] \
        [--threads 1 2] [--device cpu] [--out benchmarks/results/training_step]
    python benchmarks/bench_training_step.py --quick        # configs/tiny.yaml, 1 step, 1 thread

Writes summary.md into --out.

The steps are the real ones (`VAETrainer.train_step`, `LDMTrainer.train_step`) on random inputs of the
config's shapes and batch sizes: images (B, 1, *data.shape) in [-1, 1] for the VAE (``train_vae.patch_size`` crops when set) (with and without the
adversarial term), latents (B, C, *shape / f) for the LDM in stage 1 (frozen text encoder: its outputs come
from the cache) and stage 2 (top text layer trainable, so the encoder runs forward and backward).
The text encoder is a random compact BERT (hidden 256, 4 layers, like `medgen text pretrain`'s default)
fed real report texts; the networks are untrained (timings do not depend on the weights).
A 2-subject dataset is synthesised in a temporary folder only so that the trainers can be built.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import harness
import torch

ROOT = harness.ROOT


def _time(fn, steps: int, warmup: int) -> tuple[float, float, float]:
    t = harness.time_call(fn, repeats=steps, warmup=warmup)
    return t.median_s, t.min_s, t.stdev_s


def _setup(config_path: Path, tmp: Path, device: str):
    from medgen.config import load_config
    from medgen.dataset.builder import build_synthetic_dataset
    from medgen.models.autoencoder import TrainedAutoencoder, autoencoder_config, build_autoencoder
    from medgen.text.tiny import make_tiny_bert

    probe = load_config(config_path)
    shape, spacing = probe["data"]["shape"], probe["data"]["spacing"]
    manifest = build_synthetic_dataset(tmp / "data", n=2, shape=int(shape[0]), spacing=float(spacing[0]),
                                       val_fraction=0.0, test_fraction=0.0, workers=1, progress=False)
    text_dir = make_tiny_bert(tmp / "text", hidden_size=256, num_layers=4, num_heads=4, vocab_size=8000)
    config = load_config(config_path, [f"output_dir={tmp / 'run'}", f"data.manifest={manifest}",
                                       f"text_encoder.name_or_path={text_dir}", "data.cache=none"])
    TrainedAutoencoder(build_autoencoder(config["autoencoder"]),
                       {**autoencoder_config(config["autoencoder"]), "scale_factor": 1.0}).save_pretrained(
        tmp / "run" / "autoencoder")
    return config


def bench(config: dict, device: str, steps: int, warmup: int) -> list[dict]:
    from medgen.models import latent_downsample_factor
    from medgen.training.ldm import LDMTrainer
    from medgen.training.vae import VAETrainer

    rows = []
    dev = torch.device(device)
    tv, tl = config["train_vae"], config["train_ldm"]
    shape = [int(s) for s in config["data"]["shape"]]
    patch = tv.get("patch_size")  # the VAE trains on random crops of this side when set
    vae_shape = [min(int(patch), s) for s in shape] if patch else shape

    vae = VAETrainer(config, device=device, progress=False)
    x = torch.rand(int(tv["batch_size"]), 1, *vae_shape, device=dev) * 2 - 1
    for adversarial in (False, True):
        vae.tc = {**tv, "adv_start": 0 if adversarial else 10**9, "steps": 10**9}
        med, best, sd = _time(functools.partial(vae.train_step, x), steps, warmup)
        rows.append({"stage": "VAE" + (" + adversarial" if adversarial else ""), "batch": tv["batch_size"],
                     "input": "x".join(map(str, [1, *vae_shape])), "median_s": med, "min_s": best, "stdev_s": sd})
    del vae

    ldm = LDMTrainer(config, device=device, progress=False)
    f = latent_downsample_factor(config["autoencoder"])
    c = int(config["unet"]["in_channels"])
    b = int(tl["batch_size"])
    latent = [c, *(s // f for s in shape)]
    reports = [ldm.dataset.rows[i % len(ldm.dataset.rows)]["report"] for i in range(b)]
    batch = {"latent": torch.randn(b, *latent), "report": reports,
             "density": torch.rand(b), "id": [str(i) for i in range(b)]}
    first = int(tl["stages"][0]["steps"])
    for stage, step in (("LDM stage 1 (text frozen)", 0), ("LDM stage 2 (top text layer trainable)", first)):
        if len(tl["stages"]) == 1 and step:
            break
        ldm.step = step

        def one(step=step):
            ldm.train_step(batch)
            ldm.step = step  # stay in the stage

        med, best, sd = _time(one, steps, warmup)
        rows.append({"stage": stage, "batch": b, "input": "x".join(map(str, latent)), "median_s": med, "min_s": best, "stdev_s": sd})
    n_unet = sum(p.numel() for p in ldm.unet.parameters())
    rows.append({"unet_params": n_unet})
    return rows


def main(argv=None) -> int:
    parser = harness.parser("training_step", __doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "phantom-64.yaml")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts to try")
    parser.add_argument("--device", default="cpu")
    args = harness.parse(parser, argv, quick={"config": ROOT / "configs" / "tiny.yaml", "steps": 1, "warmup": 0,
                                              "threads": [1]})

    import warnings

    warnings.filterwarnings("ignore", message=".*longer than max_length.*")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        config = _setup(args.config, Path(tmp), args.device)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for row in bench(config, args.device, args.steps, args.warmup):
                if "unet_params" in row:
                    unet_params = row["unet_params"]
                    continue
                results.append({**row, "threads": threads})
                print(f"{row['stage']:<42} threads {threads}  batch {row['batch']:>3}  {row['input']:<12} "
                      f"{row['median_s']:8.3f} s/step (min {row['min_s']:.3f}, sd {row['stdev_s']:.3f})", flush=True)

    load = os.getloadavg()
    lines = [
        "# Training step time",
        "",
        f"Command: `python benchmarks/bench_training_step.py --config {args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config} "
        f"--steps {args.steps} --warmup {args.warmup} --threads {' '.join(map(str, args.threads))} --device {args.device}`",
        "",
        f"Machine: {harness.machine()}; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(other processes were sharing the cores when this is above 0).",
        f"Config sha256 {hashlib.sha256(args.config.read_bytes()).hexdigest()[:12]}. "
        f"UNet parameters: {unet_params / 1e6:.2f} M. Median of {args.steps} steps after {args.warmup} warm-up steps; "
        "random inputs, real train_step code (forward, loss, backward, clipping, AdamW, EMA). "
        "On cores shared with other processes, 2 intra-op threads stall whenever one core is taken (large sd); "
        "min is the least-disturbed step.",
        "",
        "| stage | threads | batch | input per sample | s / step (median) | min | sd |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r['stage']} | {r['threads']} | {r['batch']} | {r['input']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['stdev_s']:.3f} |")
    harness.write_summary(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
