"""Add the trained slice preview model and slice reader to the embedded default model (fp16 weights; the
preview reuses the default model's text encoder, report reader and anatomy bank) and describe them in the card.
Run it after any script that rewrites the whole default model folder (embed_default_reader.py does).

    .venv/bin/python scripts/embed_default_slices.py --preview runs/preview-model --reader runs/slice-reader
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from medgen.pipelines.default_model import default_model_path
from medgen.slices.describer.model import SliceReader
from medgen.slices.generator.model import SlicePreviewModel

CARD_HEADING = "## Slice preview and slice reader (2D)"
PINNED = "trained_reader"  # preview/trained_reader/encoder: the reader encoder the preview was trained with


def _mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _reader_rows(reader: dict) -> list[str]:
    held = reader["held_out"]
    return [
        "| slice reader design | transformers LlavaForConditionalGeneration: CLIP ViT tower (1 channel, 128 px, patch "
        "16), GELU projector, 3-layer Llama LM with its own BPE tokenizer on medgen's report corpus |",
        "| slice reader training | " + ", ".join(f"{k} {v['steps']} steps ({v['seconds'] / 60:.0f} min, trains "
                                                 f"{'+'.join(v['trained'])})" for k, v in reader.items()
                                                 if k.startswith("stage")) + " |",
        *(f"| slice reader held-out ({language.upper()}) | " + ", ".join(
            f"{k} {100 * v:.0f} %" for k, v in held[language].items() if k not in ("n", "n_lesion") and v is not None)
          + " |" for language in ("en", "zh"))]


def card(preview: dict, reader: dict | None, sizes: dict) -> str:
    vae, base, refiner = preview["vae"], preview["base"], preview.get("refiner")
    rows = ["| item | value |", "| --- | --- |",
            "| preview design | diffusers AutoencoderKL (128 px -> 4 x 32 x 32) + base and refiner UNet2DConditionModel "
            "(SDXL text_time embedding: pooled text + micro-conditioning position / FOV / spacing / crop / density); "
            "layout slice joined to the latent; text = default text encoder + report reader encoder, concatenated |",
            f"| preview training | {preview['n_pairs']} phantom slices (seeds 530000+); autoencoder {vae['steps']} steps "
            f"({vae['seconds'] / 60:.0f} min), base {base['steps']} steps ({base['seconds'] / 60:.0f} min)"
            + (f", refiner {refiner['steps']} steps on t < {refiner['t_range'][1]} ({refiner['seconds'] / 60:.0f} min)"
               if refiner else "") + ", 2 CPU cores |",
            f"| autoencoder ceiling (held-out slices) | whole {vae['ceiling_held_out']['mae_hu_whole']} HU, lesions "
            f"{vae['ceiling_held_out']['mae_hu_lesion']} HU, fluid {vae['ceiling_held_out']['mae_hu_effusion']} HU MAE |",
            *(_reader_rows(reader) if reader else ["| slice reader | not embedded |"]),
            "| size (fp16) | " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} MB" for k, v in sizes.items()) + " |",
            "| measured | benchmarks/results/preview/summary.md (`benchmarks/bench_preview.py`) |"]
    return "\n".join([CARD_HEADING, "", *rows, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preview", type=Path, required=True)
    parser.add_argument("--reader", type=Path, default=None, help="slice reader folder (default: embed none)")
    parser.add_argument("--no-student", action="store_true", help="leave the distilled sampler out (size budget)")
    parser.add_argument("--pin-reader-encoder", type=Path, default=None,
                        help="report reader folder whose encoder the preview was trained with, when the default "
                             "reader has been replaced since: its encoder is copied into preview/ and used there")
    args = parser.parse_args()
    out = default_model_path()
    preview = SlicePreviewModel.from_pretrained(args.preview)
    if args.no_student:
        preview.student = None
    for module in (preview.vae, preview.base, preview.refiner, preview.student):
        if module is not None:
            module.to(torch.float16)
    parts = {"text_encoder": "../text_encoder", "reader": "../reader", "anatomy_bank": "../anatomy_bank"}
    if args.pin_reader_encoder is not None:
        parts["reader_encoder"] = PINNED
    preview.save_pretrained(out / "preview", overwrite=True, parts=parts)
    if args.pin_reader_encoder is not None:
        shutil.copytree(args.pin_reader_encoder / "encoder", out / "preview" / PINNED / "encoder")
    sizes = {"preview": _mb(out / "preview")}
    reader = None
    if args.reader is not None:
        reader = SliceReader.from_pretrained(args.reader)
        reader.model.to(torch.float16)
        reader.save_pretrained(out / "slice_reader", overwrite=True)
        sizes["slice_reader"] = _mb(out / "slice_reader")
    text = (out / "MODEL_CARD.md").read_text(encoding="utf-8").split(CARD_HEADING)[0].rstrip() + "\n\n"
    (out / "MODEL_CARD.md").write_text(text + card(preview.config["training"], reader.config["training"] if reader else None, sizes),
                                       encoding="utf-8")
    print(json.dumps(sizes))


if __name__ == "__main__":
    main()
