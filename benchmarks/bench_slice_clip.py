"""Benchmark of the CLIP-style slice-report model: top-1 / top-5 retrieval between held-out phantom key slices
and their captions, both ways, in English and Chinese, against an untrained model of the same architecture and
the chance level of the same gallery (both measured in this run).

    .venv/bin/python benchmarks/bench_slice_clip.py --n-subjects 1000 --steps 2000   # -> benchmarks/results/slice_clip/
    .venv/bin/python benchmarks/bench_slice_clip.py --model runs/slice-clip  # no training
    .venv/bin/python benchmarks/bench_slice_clip.py --quick                  # smoke run (8 subjects, 2 steps)

Training slices: phantoms of seeds 530 000 + i (key axial slice and `--extra` random lung-level slices each).
Held-out pairs: the key axial slice of each phantom of seeds 885 000 + i (a range no other part of medgen
draws from), with its caption. Identical captions (normal slices) count as one another's match. "Top-1
agrees" columns: for each image, whether the caption it retrieves first names the same thing as its own
(normal vs abnormal, the set of lesion sides, lobes and types, the effusion side), even when it is not the
exact caption.
Writes ``summary.md`` and ``results.json`` to `--out`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import harness
import numpy as np
import torch

from medgen.slices.clip import SliceCLIP, embed_pairs, ground_tower, rank_metrics, train_clip
from medgen.slices.sources import EVAL_SEED0, TRAIN_SEED0, phantom_slice_set

ATTRIBUTES = {
    "normal": lambda f: f["normal"],
    "lesion sides": lambda f: sorted({x["side"] for x in f["lesions"]}),
    "lesion lobes": lambda f: sorted({x["lobe"] for x in f["lesions"]}),
    "lesion types": lambda f: sorted({x["type"] for x in f["lesions"]}),
    "effusion": lambda f: f["effusion"],
}


def scores(sim: np.ndarray, samples, language: str) -> dict:
    """Retrieval metrics of a similarity matrix; how often each image's top-1 caption agrees with its own."""
    out = rank_metrics(sim, [s.caption(language) for s in samples])
    top1 = sim.argmax(axis=1)
    for name, get in ATTRIBUTES.items():
        out[f"top1 agrees: {name}"] = float(
            np.mean([get(samples[i].findings) == get(samples[j].findings) for i, j in enumerate(top1)])
        )
    return out


def evaluate(model: SliceCLIP, samples, language: str) -> dict:
    images, texts = embed_pairs(model, [(s, s.caption(language)) for s in samples])
    return scores((images @ texts.T).numpy(), samples, language)


def chance(samples, language: str, trials: int = 200, seed: int = 0) -> dict:
    """Mean scores of random similarity matrices over the same gallery (duplicates included)."""
    rng = np.random.default_rng(seed)
    runs = [
        scores(rng.standard_normal((len(samples), len(samples))), samples, language) for _ in range(trials)
    ]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k != "n"}


def table(results: dict) -> str:
    keys = [
        "image_to_text_top1",
        "image_to_text_top5",
        "text_to_image_top1",
        "text_to_image_top5",
        *[f"top1 agrees: {name}" for name in ATTRIBUTES],
    ]
    lines = [
        "| language | model | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
        "| --- | --- | " + " | ".join("---" for _ in keys) + " |",
    ]
    for language in ("en", "zh"):
        for arm in ("trained", "untrained", "chance"):
            row = results[arm][language]
            cells = [f"{100 * row[k]:.1f}" if k in row else "–" for k in keys]
            lines.append(f"| {language} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = harness.parser("slice_clip", __doc__)
    parser.add_argument("--model", type=Path, default=None, help="evaluate this trained model (no training)")
    parser.add_argument(
        "--encoder", type=Path, default=None, help="text encoder (default: the default model's)"
    )
    parser.add_argument("--n-subjects", type=int, default=1000, help="training phantoms (default 1000)")
    parser.add_argument("--extra", type=int, default=2, help="extra lung-level slices per training phantom")
    parser.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per step (default 64)")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    parser.add_argument("--n", type=int, default=100, help="held-out pairs (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation / training seed")
    parser.add_argument("--ground-steps", type=int, default=0, help="label-map grounding steps before training")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--save-model", type=Path, default=None, help="also save the trained model here")
    args = harness.parse(parser, argv, quick={"n_subjects": 8, "extra": 0, "steps": 2, "batch_size": 4, "n": 8})
    device = torch.device(args.device)

    started = time.perf_counter()
    held_out = phantom_slice_set(args.n, seed0=EVAL_SEED0)
    timings = {"held_out_slices_s": round(time.perf_counter() - started, 1)}
    torch.manual_seed(args.seed)
    untrained = SliceCLIP.from_text_encoder(args.encoder).to(device)
    info = {
        "n_held_out": len(held_out),
        "held_out_seeds": [EVAL_SEED0, EVAL_SEED0 + args.n - 1],
        "device": str(device),
        "unique_captions": {lang: len({s.caption(lang) for s in held_out}) for lang in ("en", "zh")},
    }
    if args.model is not None:
        model = SliceCLIP.from_pretrained(args.model).to(device)
        info["model"] = str(args.model)
    else:
        started = time.perf_counter()
        train = phantom_slice_set(args.n_subjects, seed0=TRAIN_SEED0, extra=args.extra)
        timings["training_slices_s"] = round(time.perf_counter() - started, 1)
        torch.manual_seed(args.seed)
        model = SliceCLIP.from_text_encoder(args.encoder).to(device)
        started = time.perf_counter()
        if args.ground_steps:
            info["grounding"] = ground_tower(model, train, steps=args.ground_steps)
        losses = train_clip(
            model, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        timings["training_s"] = round(time.perf_counter() - started, 1)
        timings["s_per_step"] = round(timings["training_s"] / args.steps, 3)
        info.update(
            n_train_slices=len(train),
            train_seeds=[TRAIN_SEED0, TRAIN_SEED0 + args.n_subjects - 1],
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            loss_first=round(losses[0], 4),
            loss_last50=round(float(np.mean(losses[-50:])), 4),
            loss_every_50=[round(x, 4) for x in losses[::50]],
        )
        if args.save_model is not None:
            model.save_pretrained(args.save_model)
            info["model"] = str(args.save_model)
    results = {
        "info": info,
        "timings": timings,
        "model_config": model.config,
        "trained": {lang: evaluate(model, held_out, lang) for lang in ("en", "zh")},
        "untrained": {lang: evaluate(untrained, held_out, lang) for lang in ("en", "zh")},
        "chance": {lang: chance(held_out, lang) for lang in ("en", "zh")},
    }

    harness.write_json(args.out, results)
    settings = json.dumps({k: v for k, v in info.items() if k != "loss_every_50"}, ensure_ascii=False)
    text = (
        f"# Slice CLIP retrieval ({len(held_out)} held-out phantom key slices)\n\n"
        f"Produced by `benchmarks/bench_slice_clip.py` ({settings}).\n"
        f"Timings: {json.dumps(timings)}. Percent; identical captions count as matches; ties count "
        "against the model.\n\n"
        f"{table(results)}\n"
    )
    harness.write_summary(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
