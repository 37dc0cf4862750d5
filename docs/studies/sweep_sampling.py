"""Measure sampler settings of a model: seconds per volume against steps, and guidance weights against
report fidelity and density calibration on a few held-out reports. Used to choose the defaults.

    .venv/bin/python docs/studies/sweep_sampling.py --model runs/phantom-64/pipeline --out docs/studies/sampling_sweep.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from medgen.evaluation.calibration import score_calibration, select_calibration_cases
from medgen.evaluation.fidelity import PipelineGenerator, make_heldout_cases, score_fidelity
from medgen.pipelines import ReportToVolumePipeline


def seconds_per_volume(pipe, report: str, steps: int, repeats: int = 2) -> float:
    pipe(report, num_inference_steps=steps, seed=0, progress=False)  # warm-up
    start = time.perf_counter()
    for seed in range(repeats):
        pipe(report, num_inference_steps=steps, seed=seed, progress=False)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", default="docs/studies/sampling_sweep.md")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--text-weights", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    parser.add_argument("--density-weights", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--n-reports", type=int, default=8)
    parser.add_argument("--n-calibration", type=int, default=3)
    args = parser.parse_args()

    pipe = ReportToVolumePipeline.from_pretrained(args.model)
    shape, spacing = tuple(pipe.config["shape"]), tuple(pipe.config["spacing"])
    default_w = pipe.config["guidance"]
    cases = make_heldout_cases(args.n_reports, shape=shape, spacing=spacing, seed=4242)
    calib = select_calibration_cases(make_heldout_cases(40, shape=shape, spacing=spacing, seed=4343),
                                     args.n_calibration, min_diameter_mm=25.0)
    rows = ["| steps | s / volume (64^3, CPU) |", "| ---: | ---: |"]
    for steps in args.steps:
        rows.append(f"| {steps} | {seconds_per_volume(pipe, cases[0].report, steps):.2f} |")
    grid = [(w, default_w["density"]) for w in args.text_weights]
    grid += [(default_w["text"], w) for w in args.density_weights if w != default_w["density"]]
    table = ["| w_text | w_density | lesion side | lesion zone | normal specificity | effusion side | "
             "density rho | density MAE (HU) | lesions detected |", "| " + " | ".join(["---:"] * 9) + " |"]
    results = []
    for w_text, w_density in grid:
        gen = PipelineGenerator(pipe, guidance_scale=w_text, density_guidance_scale=w_density)
        fid, _, _ = score_fidelity(cases, gen, seeds=[0])
        cal = score_calibration(calib, gen, seeds=[0], densities=(0.0, 0.5, 1.0))
        overall = fid["overall"]
        figures = {k: cal.get(k) for k in ("spearman_rho", "mae_hu")}

        def fmt(key, src=overall):
            value = src.get(key)
            value = value.get("mean") if isinstance(value, dict) else value
            return "—" if value is None or not np.isfinite(value) else f"{value:.2f}"

        table.append(f"| {w_text:g} | {w_density:g} | {fmt('lesion_side')} | {fmt('lesion_zone')} | "
                     f"{fmt('normal_specificity')} | {fmt('effusion_side')} | {fmt('spearman_rho', figures)} | "
                     f"{fmt('mae_hu', figures)} | {cal.get('detected_fraction', 0):.2f} |")
        results.append({"w_text": w_text, "w_density": w_density, "fidelity": overall, "calibration": figures,
                        "detected_fraction": cal.get("detected_fraction")})
    text = "\n".join([
        "# Sampler settings sweep", "",
        f"Command: `.venv/bin/python docs/studies/sweep_sampling.py --model {args.model} --out {args.out} "
        f"--steps {' '.join(map(str, args.steps))} --text-weights {' '.join(f'{w:g}' for w in args.text_weights)} "
        f"--density-weights {' '.join(f'{w:g}' for w in args.density_weights)} --n-reports {args.n_reports} "
        f"--n-calibration {args.n_calibration}`", "",
        f"Model: {pipe.config.get('name')}; {args.n_reports} held-out reports (EN/ZH) for fidelity, "
        f"{len(calib)} lesion reports (>= 25 mm) at d = 0, 0.5, 1 for calibration; seed 0; CPU.", "",
        *rows, "", *table, ""])
    Path(args.out).write_text(text, encoding="utf-8")
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
