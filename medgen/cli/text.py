"""``medgen text``: build a compact domain text encoder offline.

    medgen text pretrain --manifest data/phantom-64/manifest.jsonl --out runs/phantom-64/text_encoder
                         [--steps 2000] [--vocab-size 8000] [--hidden-size 256] [--layers 4] [--heads 4]
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("text", help="text encoder (offline domain pretraining)")
    sub = parser.add_subparsers(dest="text_command", required=True)

    pre = sub.add_parser("pretrain", help="MLM-pretrain a compact BERT on the manifest's training reports")
    pre.add_argument("--manifest", type=Path, required=True, help="manifest.jsonl (uses split == 'train')")
    pre.add_argument("--out", type=Path, required=True, help="output folder for the encoder")
    pre.add_argument("--steps", type=int, default=2000, help="optimiser steps (default 2000)")
    pre.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocabulary size (default 8000)")
    pre.add_argument("--hidden-size", type=int, default=256, help="hidden size (default 256)")
    pre.add_argument("--layers", type=int, default=4, help="transformer layers (default 4)")
    pre.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    pre.add_argument("--max-length", type=int, default=128, help="longest token sequence (default 128)")
    pre.add_argument("--batch-size", type=int, default=32, help="reports per step (default 32)")
    pre.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    pre.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    pre.add_argument("--quiet", action="store_true", help="no progress bar")
    pre.set_defaults(func=run_pretrain)


def run_pretrain(args) -> int:
    from medgen.dataset.manifest import read_manifest
    from medgen.errors import InputFileError
    from medgen.text.pretrain import pretrain_compact_bert

    rows = read_manifest(args.manifest)
    corpus = [row["report"] for row in rows if row["split"] == "train" and row["report"]]
    if not corpus:
        raise InputFileError(args.manifest, "no non-empty report in the 'train' split to pretrain on")
    out = pretrain_compact_bert(
        corpus, args.out, vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_layers=args.layers,
        num_heads=args.heads, max_length=args.max_length, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, progress=not args.quiet, overwrite=args.overwrite,
    )
    print(f"text encoder pretrained on {len(corpus)} training reports: {out}")
    return 0
