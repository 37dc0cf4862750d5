"""Is it the model or the instrument? The analyzer's ceiling on each phantom, and density read in the layout's mask.

1. The fidelity section of `medgen evaluate` run on the phantoms themselves (`PhantomOracle`, a perfect generator)
   of phantom v1 and of phantom v2: the best any model trained on that phantom can score with this analyzer.
2. For each model, the mean HU inside each lesion's own layout label (no analyzer involved) against the target HU
   of its density, over the density grid of the calibration section: does the renderer draw what the layout asks?

    .venv/bin/python docs/studies/v2_instrument.py --n 40 --out docs/studies/v2_instrument.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from medgen.evaluation.fidelity import PhantomOracle, make_heldout_cases, score_fidelity
from medgen.layout.labels import FIRST_LESION_LABEL
from medgen.phantom.chest import sample_findings
from medgen.pipelines import ReportToVolumePipeline
from medgen.volume import density_to_hu

ROWS = ("lesion_detected", "lesion_side", "lesion_lobe", "lesion_size_within_30pct_ge20mm", "normal_specificity",
        "effusion_side", "emphysema_presence")
MODELS = (("default (phantom v2 + constraint)", None), ("previous default (phantom v1)", "models/phantom-v1-default"))
DENSITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


def oracle_ceiling(n: int, version: int) -> dict:
    cases = make_heldout_cases(n, shape=(64,) * 3, spacing=(5.0,) * 3, phantom_version=version)
    summary = score_fidelity(cases, PhantomOracle(cases), seeds=(0,), progress=False)[0]
    overall = summary.get("overall", summary)
    return {k: (overall.get(k) or {}).get("mean") for k in ROWS}


def layout_density(model, n: int) -> dict:
    from medgen.pipelines.default_model import resolve_model_path

    pipe = ReportToVolumePipeline.from_pretrained(resolve_model_path(model))
    targets, measured = [], []
    for i in range(n):
        findings = sample_findings(np.random.default_rng([9_090, i]), p_normal=0.0)
        for d in DENSITIES:
            result = pipe(findings=findings, density=d, seed=i, progress=False)
            labels, hu = np.asarray(result.labels.array), np.asarray(result.volume.array, float)
            for k in range(len(result.findings.lesions)):
                mask = labels == FIRST_LESION_LABEL + k
                if mask.sum() >= 8:  # at least 8 voxels (a 10 mm lesion at 5 mm)
                    targets.append(density_to_hu(d))
                    measured.append(float(hu[mask].mean()))
    t, m = np.asarray(targets), np.asarray(measured)
    return {"n": len(t), "spearman_rho": float(spearmanr(t, m).statistic), "mae_hu": float(np.abs(t - m).mean()),
            "bias_hu": float((m - t).mean()),
            "by_density": {f"{d:g}": (round(float(m[t == density_to_hu(d)].mean()), 1) if (t == density_to_hu(d)).any()
                                      else None) for d in DENSITIES}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="held-out cases for the ceiling; lesion reports for density")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    started = time.time()
    ceiling = {f"phantom v{v}": oracle_ceiling(args.n, v) for v in (1, 2)}
    density = {name: layout_density(model, args.n // 4) for name, model in MODELS}
    minutes = (time.time() - started) / 60
    lines = ["# The analyzer on phantom v2, and density in the layout's own mask", "",
             f"Command: `.venv/bin/python docs/studies/v2_instrument.py --n {args.n}` ({minutes:.0f} min).", "",
             f"## 1. The analyzer's ceiling: fidelity of the phantoms themselves ({args.n} held-out cases, EN/ZH)", "",
             "| figure | phantom v1 | phantom v2 |", "| --- | --- | --- |"]
    for k in ROWS:
        cells = [ceiling[p][k] for p in ("phantom v1", "phantom v2")]
        lines.append(f"| {k} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    lines += ["", f"## 2. Mean HU inside each lesion's layout label vs its target ({args.n // 4} lesion reports x "
              f"{len(DENSITIES)} densities, lesions of >= 8 voxels)", "",
              "| model | n | Spearman ρ | MAE HU | bias HU | " + " | ".join(f"d={d:g} ({density_to_hu(d):.0f})"
                                                                   for d in DENSITIES) + " |",
              "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in DENSITIES) + " |"]
    for name, r in density.items():
        lines.append(f"| {name} | {r['n']} | {r['spearman_rho']:.3f} | {r['mae_hu']:.0f} | {r['bias_hu']:.0f} | "
                     + " | ".join("-" if r["by_density"][f"{d:g}"] is None else f"{r['by_density'][f'{d:g}']:.0f}"
                                  for d in DENSITIES) + " |")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"ceiling": ceiling, "density": density}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
