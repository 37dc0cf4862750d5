"""What the autoencoder lets through: report fidelity of phantoms vs their VAE reconstructions.

A latent diffusion model can never be more faithful than its autoencoder's decoder. This scores, on the
same held-out cases and with the same analyzer as `medgen evaluate`, (a) the phantoms themselves (the
analyzer's ceiling) and (b) encode -> decode of those phantoms (the autoencoder's ceiling), plus the
reconstruction error in HU (whole volume, inside the lungs, inside lesions).

    .venv/bin/python docs/studies/autoencoder_ceiling.py --model medgen/assets/default-model --n 40 \
        --out docs/studies/autoencoder_ceiling.md
    # a trained autoencoder before any UNet (measure the ceiling before training the next stage):
    .venv/bin/python docs/studies/autoencoder_ceiling.py --config configs/phantom-64-layout.yaml \
        --autoencoder runs/phantom-64-layout/autoencoder --n 40 --out docs/studies/autoencoder_ceiling_layout.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from medgen.evaluation.fidelity import PhantomOracle, make_heldout_cases, score_fidelity
from medgen.findings import LABELS, LOBE_LABELS
from medgen.phantom.chest import make_phantom
from medgen.pipelines import ReportToVolumePipeline
from medgen.pipelines.layout_stage import layout_tensors
from medgen.volume import Volume, hu_to_intensity

ATTRIBUTES = ("lesion_detected", "lesion_side", "lesion_lobe", "lesion_zone", "lesion_size_within_30pct_ge20mm",
              "lesion_density_class", "effusion_side", "effusion_grade", "emphysema_grade", "normal_specificity")


@torch.no_grad()
def reconstruct(pipe, volume: Volume, case=None) -> Volume:
    """Encode (posterior mean) and decode one volume with the pipeline's autoencoder; an anatomy-aware
    decoder gets the case's exact layout (rebuilt from its findings and phantom seed)."""
    x = torch.as_tensor(hu_to_intensity(np.asarray(volume.array, np.float32)))[None, None]
    z = pipe.autoencoder.encode(x.to(pipe.device))[0] * float(pipe.config["scale_factor"])
    layouts = []
    if pipe.layout_grounded:
        from medgen.layout import make_layout

        layouts = [make_layout(case.findings, shape=volume.shape, spacing=volume.spacing, seed=case.subject_seed)]
    full = layout_tensors(layouts, pipe.latent_factor, pipe.device)[0]
    return Volume(pipe.decode(z, full)[0], volume.affine)


class AutoencoderOracle(PhantomOracle):
    """`PhantomOracle` whose volumes go through the autoencoder first; each case is reconstructed once."""

    def __init__(self, cases, pipe):
        super().__init__(cases)
        self.pipe = pipe
        self.reconstructions: dict[str, Volume] = {}  # report -> reconstruction of its own phantom

    def __call__(self, reports, *, seed, density=None):
        if density is not None:  # rebuilt phantoms at another density: nothing to reuse
            raise NotImplementedError("the ceiling is measured at each case's own density")
        for report in reports:
            if report not in self.reconstructions:
                self.reconstructions[report] = reconstruct(self.pipe, self.cases[report].real, self.cases[report])
        self.n_generated += len(reports)
        return [self.reconstructions[r] for r in reports]


def _with_autoencoder(args) -> ReportToVolumePipeline:
    """A pipeline around a trained autoencoder alone (its UNet is untrained and never used here)."""
    from medgen.config import load_config
    from medgen.models.autoencoder import TrainedAutoencoder
    from medgen.pipelines.build import build_pipeline
    from medgen.text.loading import load_text_encoder

    config = load_config(args.config)
    trained = TrainedAutoencoder.from_pretrained(args.autoencoder)
    pipe = build_pipeline(config, load_text_encoder(config["text_encoder"]), scale_factor=trained.config["scale_factor"])
    pipe.autoencoder = trained.model
    return pipe


def reconstruction_errors(cases, reconstructions: dict[str, Volume]) -> dict:
    """Mean absolute HU error over whole volumes, lungs and lesions (labels from rebuilding each phantom)."""
    whole, lung, lesion = [], [], []
    for case in cases:
        ph = make_phantom(case.findings, shape=case.real.shape, spacing=case.real.spacing, seed=case.subject_seed)
        real = np.asarray(case.real.array, np.float32)
        err = np.abs(np.asarray(reconstructions[case.report].array) - np.clip(real, -1024, 1024))
        labels = np.asarray(ph.labels.array)
        whole.append(err.mean())
        lung_mask = np.isin(labels, list(LOBE_LABELS.values()))
        lesion_mask = labels == LABELS["lesion"]
        if lung_mask.any():
            lung.append(err[lung_mask].mean())
        if lesion_mask.any():
            lesion.append(err[lesion_mask].mean())
    return {"whole_volume": float(np.mean(whole)), "lungs": float(np.mean(lung)),
            "lesions": float(np.mean(lesion)) if lesion else None, "n_volumes": len(cases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder")
    parser.add_argument("--autoencoder", help="autoencoder folder (`medgen train vae` output), with --config")
    parser.add_argument("--config", help="experiment YAML of that autoencoder")
    parser.add_argument("--n", type=int, default=40, help="held-out cases")
    parser.add_argument("--seed", type=int, default=2024, help="case seed (medgen evaluate uses 2024)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if (args.model is None) == (args.autoencoder is None):
        parser.error("give --model, or --autoencoder with --config")
    pipe = ReportToVolumePipeline.from_pretrained(args.model) if args.model else _with_autoencoder(args)
    cases = make_heldout_cases(args.n, shape=tuple(pipe.config["shape"]), spacing=tuple(pipe.config["spacing"]),
                               seed=args.seed)
    rows = {}
    autoencoded = AutoencoderOracle(cases, pipe)
    for name, oracle in (("phantoms (analyzer ceiling)", PhantomOracle(cases)),
                         ("VAE reconstructions (autoencoder ceiling)", autoencoded)):
        summary, _, _ = score_fidelity(cases, oracle, seeds=[0])
        rows[name] = summary["overall"]
    errors = reconstruction_errors(cases, autoencoded.reconstructions)

    def cell(value):
        value = value.get("mean") if isinstance(value, dict) else value
        return "—" if value is None or not np.isfinite(value) else f"{100 * value:.0f} %"

    lines = ["# Autoencoder ceiling", "",
             "Command: `.venv/bin/python docs/studies/autoencoder_ceiling.py "
             + (f"--model {args.model}" if args.model else f"--config {args.config} --autoencoder {args.autoencoder}")
             + f" --n {args.n} --out {args.out}`", "",
             f"{args.n} held-out cases (case seed {args.seed}, EN/ZH alternating), analyzed by `medgen.analysis`.", "",
             "| source | " + " | ".join(a.replace("_", " ") for a in ATTRIBUTES) + " |",
             "| --- | " + " | ".join("---:" for _ in ATTRIBUTES) + " |"]
    for name, overall in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(overall.get(a)) for a in ATTRIBUTES) + " |")
    lesion_mae = "—" if errors["lesions"] is None else f"{errors['lesions']:.0f}"
    lines += ["", "Reconstruction mean absolute error (HU, window -1024..1024): "
              f"whole volume {errors['whole_volume']:.0f}, lungs {errors['lungs']:.0f}, lesions {lesion_mae}."]
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"fidelity": rows, "reconstruction_mae_hu": errors}, indent=2,
                                                   default=float), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
