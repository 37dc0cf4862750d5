"""Add a trained report reader to the embedded default model (fp16 safetensors) and describe it in the card.

    .venv/bin/python scripts/embed_default_reader.py --reader runs/reader-v1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.default_model import default_model_path
from medgen.reader import ReportReader

CARD_HEADING = "## Report reader"


def reader_card(summary: dict) -> str:
    config = summary["config"]
    scores = summary["val_scores_training_families"]
    return "\n".join([
        CARD_HEADING, "",
        "| item | value |", "| --- | --- |",
        "| design | the text encoder above, fine-tuned, + a linear multi-label token-tagging head (findings, "
        "assertion: affirmed / negated / hedged / restated, size, lobe, type, margin, effusion side and grade, "
        "emphysema grade and distribution); spans assembled into `Findings` |",
        f"| training data | {config['n_train']} reports written by the training phrasing families only (EN + ZH, "
        f"{config['p_unrelated']:.0%} unrelated English paragraphs) |",
        f"| training | {config['steps']} steps, batch {config['batch_size']}, AdamW lr {config['lr']:g}, "
        f"token dropout {config.get('token_dropout', 0.0):g}, {summary['train_seconds'] / 60:.1f} min on 2 CPU cores |",
        "| augmentation | other-organ sentences, lower case, folded lines; English filler words swapped for or "
        "joined by general English words (never negation/hedging cues) |",
        f"| validation (training families, new seed) | all-correct {scores['all_correct']['accuracy']:.3f} |",
        "| held-out measurement | `medgen evaluate --reader-only` (docs/reader.md) |", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reader", required=True, type=Path)
    args = parser.parse_args()
    out = default_model_path()
    pipe = ReportToVolumePipeline.from_pretrained(out)
    pipe.reader = ReportReader.from_pretrained(args.reader)
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    pipe.save_pretrained(out, dtype=torch.float16, overwrite=True)
    card = card.split(CARD_HEADING)[0].rstrip() + "\n\n"
    summary = json.loads((args.reader / "training_summary.json").read_text())
    (out / "MODEL_CARD.md").write_text(card + reader_card(summary), encoding="utf-8")
    print(f"embedded the reader in {out}")


if __name__ == "__main__":
    main()
