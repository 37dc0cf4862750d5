"""Add trained refiner stages to the embedded default model and describe them in its card.

    .venv/bin/python scripts/embed_default_refiner.py --refiner runs/refiner [--stages 1 2 3]

Only stages given by `--stages` (default: those whose validation MAE beats trilinear interpolation) are kept;
a stage not kept, and every stage after it, falls back to trilinear interpolation at generation time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.default_model import default_model_path
from medgen.refine.model import LearnedStage

CARD_HEADING = "## Resolution cascade"


def refiner_card(summary: dict, kept: list[int]) -> str:
    config = summary["config"]
    lines = [CARD_HEADING, "",
             f"`--shape` 2, 4, 8 times the native 64³ keeps the 320 mm field of view and runs x2 stages. Learned "
             f"stages: {kept or 'none'} (a `RefinerNet` each: {config['channels']} channels, {config['blocks']} "
             f"residual blocks, on the trilinear upsample); other stages are trilinear interpolation. Trained by "
             f"`medgen train refiner --out runs/refiner --stages {config['stages']} --steps {config['steps']} "
             f"--n-patches {config['n_patches']}` on phantom patches built at the finer spacing "
             f"({summary['train_seconds'] / 60:.1f} min on 2 CPU cores).", "",
             "| stage | output spacing | validation MAE (HU): refiner / trilinear | edge voxels: refiner / trilinear | "
             "kept |", "| --- | --- | --- | --- | --- |"]
    for s in summary["stages"]:
        v = s["validation"]
        lines.append(f"| {s['stage']} | {s['spacing_mm']:g} mm | {v['mae_hu']['refiner']:.1f} / "
                     f"{v['mae_hu']['trilinear']:.1f} | {v['edge_mae_hu']['refiner']:.1f} / "
                     f"{v['edge_mae_hu']['trilinear']:.1f} | {'yes' if s['stage'] in kept else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refiner", required=True, type=Path)
    parser.add_argument("--stages", type=int, nargs="*", default=None)
    args = parser.parse_args()
    summary = json.loads((args.refiner / "training_summary.json").read_text())
    better = [s["stage"] for s in summary["stages"]
              if s["validation"]["mae_hu"]["refiner"] < s["validation"]["mae_hu"]["trilinear"]]
    wanted = set(better if args.stages is None else args.stages)
    kept = []
    for k in range(1, len(summary["stages"]) + 1):  # stages are used in order: stop at the first one not kept
        if k not in wanted:
            break
        kept.append(k)
    out = default_model_path()
    pipe = ReportToVolumePipeline.from_pretrained(out)
    pipe.refiner = [LearnedStage.from_pretrained(args.refiner / f"stage_{k}") for k in kept]
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    pipe.save_pretrained(out, dtype=torch.float16, overwrite=True)
    before, _, after = card.partition(CARD_HEADING)
    rest = after.split("\n## ", 1)[1] if "\n## " in after else ""
    card = before.rstrip() + "\n\n" + refiner_card(summary, kept) + ("\n## " + rest if rest else "")
    (out / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(f"embedded refiner stages {kept} in {out}")


if __name__ == "__main__":
    main()
