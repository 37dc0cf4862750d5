"""``medgen slices``: captioned 2D slices and the CLIP-style slice-report model.

medgen slices data --n 20 --out data/slices [--seed 0] [--views axial coronal] [--manifest M]
medgen slices train-clip --out runs/slice-clip [--n-subjects 1000] [--steps 2000] [--encoder DIR]
medgen slices eval-clip --model runs/slice-clip [--n 100] [--seed 885000]
"""

from __future__ import annotations

import json
from pathlib import Path

VIEWS = ("axial", "coronal")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "slices", help="2D slices: captioned slice data, CLIP-style slice-report model"
    )
    sub = parser.add_subparsers(dest="slices_command", required=True)

    data = sub.add_parser("data", help="write captioned key slices (PNG + npz + captions.jsonl)")
    data.add_argument("--n", type=int, required=True, help="number of subjects (phantoms, or manifest rows)")
    data.add_argument("--out", type=Path, required=True, help="output folder")
    data.add_argument(
        "--seed", type=int, default=0, help="first phantom seed (subjects seed .. seed + n - 1)"
    )
    data.add_argument(
        "--manifest", type=Path, default=None, help="cut the first N subjects of this manifest instead"
    )
    data.add_argument(
        "--views", nargs="+", choices=VIEWS, default=list(VIEWS), help="slice views (default both)"
    )
    data.add_argument(
        "--extra", type=int, default=0, help="random lung-level slices per view besides the key slice"
    )
    data.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    data.add_argument("--quiet", action="store_true", help="no progress bar")
    data.set_defaults(func=run_data)

    train = sub.add_parser("train-clip", help="train the CLIP-style slice-report model on phantom slices")
    train.add_argument("--out", type=Path, required=True, help="output model folder")
    train.add_argument("--n-subjects", type=int, default=1000, help="training phantoms (default 1000)")
    train.add_argument(
        "--extra", type=int, default=2, help="random lung-level slices per subject (default 2)"
    )
    train.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    train.add_argument("--batch-size", type=int, default=64, help="pairs per step (default 64)")
    train.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4)")
    train.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="text encoder folder (default: the default model's text_encoder/)",
    )
    train.add_argument(
        "--ground-steps",
        type=int,
        default=0,
        help="first ground the image tower on the slices' label maps for this many steps (default 0)",
    )
    train.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    train.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    train.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser(
        "eval-clip", help="top-1/top-5 slice<->caption retrieval on held-out phantoms (JSON)"
    )
    evaluate.add_argument("--model", type=Path, required=True, help="model folder written by train-clip")
    evaluate.add_argument("--n", type=int, default=100, help="held-out pairs (default 100)")
    evaluate.add_argument(
        "--seed", type=int, default=None, help="first held-out phantom seed (default 885000)"
    )
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=run_eval)


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise ValueError(f"{flag} must be >= 1, got {value}")


def _device(name: str):
    import torch

    if name not in ("cpu", "cuda") or (name == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"--device must be 'cpu' or 'cuda' (with a CUDA GPU present), got {name!r}")
    return torch.device(name)


def run_data(args) -> int:
    from medgen.io.atomic import check_output_path
    from medgen.slices.export import write_slice_folder
    from medgen.slices.sources import manifest_slices, phantom_slice_set

    _positive(args.n, "--n")
    if args.extra < 0 or args.seed < 0:
        raise ValueError(f"--extra and --seed must be >= 0, got {args.extra} and {args.seed}")
    check_output_path(args.out, args.overwrite)
    views = tuple(dict.fromkeys(args.views))
    if args.manifest is not None:
        samples = manifest_slices(
            args.manifest, views=views, extra=args.extra, limit=args.n, progress=not args.quiet
        )
    else:
        samples = phantom_slice_set(
            args.n, seed0=args.seed, views=views, extra=args.extra, progress=not args.quiet
        )
    captions = write_slice_folder(samples, args.out, overwrite=args.overwrite)
    print(f"wrote {len(samples)} captioned slices: {captions}")
    return 0


def run_train(args) -> int:
    from medgen.io.atomic import check_output_path
    from medgen.slices.clip import SliceCLIP, ground_tower, train_clip
    from medgen.slices.sources import TRAIN_SEED0, phantom_slice_set

    for value, flag in (
        (args.n_subjects, "--n-subjects"),
        (args.steps, "--steps"),
        (args.batch_size, "--batch-size"),
    ):
        _positive(value, flag)
    if args.extra < 0 or not args.lr > 0:
        raise ValueError(f"--extra must be >= 0 and --lr > 0, got {args.extra} and {args.lr}")
    device = _device(args.device)
    check_output_path(args.out, args.overwrite)
    model = SliceCLIP.from_text_encoder(args.encoder).to(
        device
    )  # fails on a bad encoder before any data work
    samples = phantom_slice_set(args.n_subjects, seed0=TRAIN_SEED0, extra=args.extra, progress=not args.quiet)
    if args.ground_steps < 0:
        raise ValueError(f"--ground-steps must be >= 0, got {args.ground_steps}")
    if args.ground_steps:
        ground_tower(model, samples, steps=args.ground_steps, progress=not args.quiet)
    losses = train_clip(
        model,
        samples,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.quiet,
    )
    model.save_pretrained(args.out)
    tail = losses[-min(50, len(losses)) :]
    print(
        f"trained on {len(samples)} slices of {args.n_subjects} phantoms; final loss "
        f"{sum(tail) / len(tail):.3f} (first step {losses[0]:.3f}); model: {args.out}"
    )
    return 0


def run_eval(args) -> int:
    from medgen.slices.clip import SliceCLIP, retrieval_metrics
    from medgen.slices.sources import EVAL_SEED0, phantom_slice_set

    _positive(args.n, "--n")
    seed0 = EVAL_SEED0 if args.seed is None else args.seed
    if seed0 < 0:
        raise ValueError(f"--seed must be >= 0, got {seed0}")
    device = _device(args.device)
    model = SliceCLIP.from_pretrained(args.model).to(device)
    samples = phantom_slice_set(args.n, seed0=seed0, progress=not args.quiet)
    result = {"model": str(args.model), "n": len(samples), "seed0": seed0}
    for language in ("en", "zh"):
        result[language] = retrieval_metrics(model, [(s, s.caption(language)) for s in samples])
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
