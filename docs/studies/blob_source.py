"""Where do the unasked-for lesion-like blobs come from? Normal phantoms through each stage of the default model.

For normal subjects (no lesion, no effusion, no emphysema) the finding analyzer (`medgen.analysis`, which never
sees how a volume was made) counts what each stage adds:

1. the phantom itself (the analyzer on the truth: its false-positive floor);
2. encode -> decode of that phantom by the model's autoencoder (posterior mean; the anatomy-aware decoder gets
   the subject's exact layout);
3. the decoder alone: a zero latent decoded with the subject's layout (what the decoder draws from the label
   map when the latent carries nothing);
4. the full model: generation from the subject's (normal) findings, same anatomy by construction of the layout;
5. the same with the lung-field constraint (`medgen.render.lung_field`, off by default).

    .venv/bin/python docs/studies/blob_source.py --n 20 --out docs/studies/blob_source.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from medgen.analysis import analyze_volume
from medgen.findings import Findings
from medgen.layout import make_layout
from medgen.phantom.chest import make_phantom
from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.default_model import default_model_path
from medgen.pipelines.layout_stage import layout_tensors
from medgen.render.lung_field import DEFAULT_RADIUS_MM
from medgen.seeds import SEED_RANGES
from medgen.volume import Volume, hu_to_intensity

STAGES = ("phantom", "autoencoder (encode -> decode)", "decoder alone (zero latent + layout)",
          "full model (normal findings)", "full model + lung-field constraint (ball 7.5 mm)")


def unasked(volume: Volume, min_lesion_mm: float = 10.0) -> dict:
    """What the analyzer finds in a volume of a normal subject (everything it finds was not asked for)."""
    analysis = analyze_volume(volume)
    lesions = [les for les in analysis.lesions if les.diameter_mm >= min_lesion_mm]
    return {"lesions": len(lesions), "lesion_mm": [round(float(les.diameter_mm), 1) for les in lesions],
            "lesion_hu": [round(float(les.mean_hu), 0) for les in lesions],
            "effusion": analysis.effusion is not None, "emphysema": analysis.emphysema_grade is not None}


@torch.no_grad()
def stage_volumes(pipe, seed: int) -> list[Volume]:
    shape, spacing = tuple(pipe.config["shape"]), tuple(pipe.config["spacing"])
    phantom = make_phantom(Findings(), shape=shape, spacing=spacing, seed=seed)
    layout = make_layout(Findings(), shape=shape, spacing=spacing, seed=seed)
    full, _ = layout_tensors([layout], pipe.latent_factor, pipe.device)
    x = torch.as_tensor(hu_to_intensity(np.asarray(phantom.image.array, np.float32)))[None, None]
    z = pipe.autoencoder.encode(x.to(pipe.device))[0] * float(pipe.config["scale_factor"])
    affine = phantom.image.affine
    generated = pipe(findings=Findings(), seed=seed, progress=False).volume
    pipe.config["lung_field_radius_mm"] = DEFAULT_RADIUS_MM
    constrained = pipe(findings=Findings(), seed=seed, progress=False).volume
    pipe.config["lung_field_radius_mm"] = None
    return [phantom.image, Volume(pipe.decode(z, full)[0], affine),
            Volume(pipe.decode(torch.zeros_like(z), full)[0], affine), generated, constrained]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="layout-grounded pipeline (default: embedded)")
    parser.add_argument("--n", type=int, default=20, help="normal subjects")
    parser.add_argument("--out", type=Path, required=True, help="markdown table (a .json beside it)")
    args = parser.parse_args()
    pipe = ReportToVolumePipeline.from_pretrained(args.model or default_model_path())
    seeds = [SEED_RANGES["studies.blob_source"].seed(i) for i in range(args.n)]
    rows = {name: [] for name in STAGES}
    for seed in seeds:
        for name, volume in zip(STAGES, stage_volumes(pipe, seed), strict=True):
            rows[name].append(unasked(volume))
    lines = ["# Where the unasked-for lesions come from", "",
             f"Command: `.venv/bin/python docs/studies/blob_source.py --n {args.n} --out {args.out}` "
             f"({args.n} normal phantom-v1 subjects at {pipe.config['shape'][0]}³ × {pipe.config['spacing'][0]} mm, "
             f"seeds {seeds[0]}–{seeds[-1]}, the embedded default model unless --model).", "",
             "| stage | volumes with a lesion ≥ 10 mm | lesions ≥ 10 mm | their size mm (median) | their HU (median) "
             "| volumes with an effusion | with emphysema | clean volumes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, found in rows.items():
        sizes = [s for f in found for s in f["lesion_mm"]]
        hus = [h for f in found for h in f["lesion_hu"]]
        clean = sum(not (f["lesions"] or f["effusion"] or f["emphysema"]) for f in found)
        lines.append(f"| {name} | {sum(f['lesions'] > 0 for f in found)}/{len(found)} | {len(sizes)} | "
                     f"{np.median(sizes) if sizes else 0:.0f} | {np.median(hus) if hus else 0:.0f} | "
                     f"{sum(f['effusion'] for f in found)} | {sum(f['emphysema'] for f in found)} | "
                     f"{clean}/{len(found)} |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"seeds": seeds, "stages": rows}, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
