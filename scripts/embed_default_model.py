"""Copy a trained pipeline into the package as the embedded default model (fp16 safetensors) + model card.

    .venv/bin/python scripts/embed_default_model.py --pipeline runs/phantom-v2-64-layout/pipeline \
        --config configs/phantom-v2-64-layout.yaml --summary configs/default-model-card.json \
        --keep-previous models/phantom-v1-default --lung-field-radius 5 \
        --lung-field-reference data/phantom-v2-64/manifest.jsonl

What the new pipeline lacks is kept from the current default: its refiner stages, the 2D preview and slice
reader folders, and the card's sections after the first table (reader, cascade, slices). `--keep-previous DIR`
first saves the current default (without the 2D folders) as a pipeline folder: the ablation row.
`--set key=JSON` sets a pipeline config entry (e.g. the lung-field constraint).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
from pathlib import Path

import torch

from medgen.config import load_config
from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.default_model import default_model_path


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _autoencoder_line(ae: dict) -> str:
    if "label_nc" in ae:
        return (f"MONAI SPADEAutoencoderKL {ae['channels']}, latent {ae['latent_channels']} ch, decoder modulated "
                f"by the {ae['label_nc']} layout channels (SPADE, {ae.get('spade_intermediate_channels')} ch)")
    return f"MONAI AutoencoderKL {ae['channels']}, latent {ae['latent_channels']} ch"


def _layout_line(unet: dict) -> str:
    if not unet.get("layout_channels"):
        return ""
    return f"; the layout pooled to the latent grid ({unet['layout_channels']} ch) joined to its input"


def model_card(config: dict, summary: dict, size_mb: float) -> str:
    lines = [
        f"# medgen default model: {config['name']}",
        "",
        "Synthetic research data only; not for diagnosis. Trained on procedural phantoms, not on patients.",
        "",
        "| item | value |",
        "| --- | --- |",
        f"| volumes | {config['data']['shape']} voxels at {config['data']['spacing']} mm (RAS+, HU) |",
        f"| text encoder | compact BERT pretrained by `medgen text pretrain` ({summary.get('text_encoder', '')}) |",
        f"| autoencoder | {_autoencoder_line(config['autoencoder'])} |",
        f"| UNet | MONAI DiffusionModelUNet {config['unet']['channels']} + density/pooled-text embedding"
        f"{_layout_line(config['unet'])} |",
        f"| sampler | {config['scheduler']['sample']['name']}, {config['scheduler']['num_inference_steps']} steps, "
        f"guidance text {config['guidance']['text']} / density {config['guidance']['density']} |",
        f"| weights | safetensors, float16, {size_mb:.1f} MB for the 3D model (reader, text encoder, autoencoder, "
        f"UNet, anatomy bank, refiner; the 2D folders below come on top) |",
    ]
    for key, value in summary.items():
        if key != "text_encoder":
            lines.append(f"| {key.replace('_', ' ')} | {value} |")
    lines += ["", f"Hardware: {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads, no GPU.",
              "", "Reproduce: see docs/training.md, section 'The default model'."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--summary", default=None, help="JSON with data size, steps, times (goes into the card)")
    parser.add_argument("--keep-previous", type=Path, default=None, help="save the current default here first")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="pipeline config entry")
    parser.add_argument("--lung-field-radius", type=float, default=None,
                        help="turn the lung-field constraint on with this ball radius (mm)")
    parser.add_argument("--lung-field-reference", type=Path, default=None,
                        help="training manifest whose normal lung gives the constraint's HU quantiles")
    args = parser.parse_args()
    pipe = ReportToVolumePipeline.from_pretrained(args.pipeline)
    for item in args.set:
        key, value = item.split("=", 1)
        pipe.config[key] = json.loads(value)
    if args.lung_field_radius is not None:
        from medgen.render.lung_field import reference_quantiles_from_manifest

        pipe.config["lung_field"] = {"radius_mm": args.lung_field_radius}
        if args.lung_field_reference is not None:
            pipe.config["lung_field"]["quantiles"] = reference_quantiles_from_manifest(args.lung_field_reference)
    out = default_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        previous = Path(tmp) / "previous"
        shutil.copytree(out, previous)
        old = ReportToVolumePipeline.from_pretrained(previous)
        if args.keep_previous is not None:
            old.save_pretrained(args.keep_previous, dtype=torch.float16, overwrite=True)
            shutil.copy2(previous / "MODEL_CARD.md", args.keep_previous / "MODEL_CARD.md")
        if not pipe.refiner and old.refiner:
            pipe.refiner = old.refiner
        pipe.save_pretrained(out, dtype=torch.float16, overwrite=True)
        for folder in ("preview", "slice_reader"):
            if (previous / folder).is_dir():
                shutil.copytree(previous / folder, out / folder)
        old_card = (previous / "MODEL_CARD.md").read_text(encoding="utf-8")
    summary = json.loads(Path(args.summary).read_text()) if args.summary else {}
    size = folder_mb(out) - sum(folder_mb(out / f) for f in ("preview", "slice_reader") if (out / f).is_dir())
    rest = old_card[old_card.index("\n## "):] if "\n## " in old_card else ""
    (out / "MODEL_CARD.md").write_text(model_card(load_config(args.config), summary, size) + rest, encoding="utf-8")
    print(f"embedded default model: {out} ({size:.1f} MB)")


if __name__ == "__main__":
    main()
