"""Measure the phantom: HU of every tissue against each tissue's target range, and the findings against their ground truth.

    python docs/studies/phantom_hu_table.py --n 20 --shape 64 --spacing 5 --out docs/studies/phantom_hu.md

Builds phantoms for seeds ``seed0 .. seed0 + n - 1`` (findings sampled from each seed) and writes a
Markdown report: per-tissue mean/std HU (from the phantom's tissue map), lesion mean HU and diameter
errors (measured on the label map), effusion volume and emphysema %LAA-950 by grade, build time.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.ndimage import label as connected

from medgen.findings import LABELS, LOBE_LABELS
from medgen.phantom.chest import TISSUES, make_phantom_with_tissues
from medgen.volume import density_to_hu

# target range of each tissue (mean HU); tissues without one are reported for information
DESIGN_HU = {"air": (-1000, -1000), "fat": (-120, -80), "muscle": (30, 60), "soft": (30, 60), "blood": (30, 60),
             "liver": (30, 60), "lung": (-870, -820), "emphysema": (-950, -910), "emphysema_cluster": (None, -950),
             "trabecular": (200, 400), "cortical": (700, 1200), "effusion": (0, 20)}
NOTES = {"air": "outside the body; noise clipped at -1024", "vessel": "intrapulmonary vessels, partial volume with lung",
         "airway": "lumen; partial volume at small bronchi", "lesion": "all lesions pooled (densities differ)",
         "skin": "soft tissue", "gas": "gastric air", "airway_wall": "partial volume with lumen and lung"}


def measure(n: int, shape: int, spacing: float, seed0: int):
    tissue_means, tissue_stds = defaultdict(list), defaultdict(list)
    lesions, effusion, emphysema, seconds = [], defaultdict(list), defaultdict(list), []
    voxel_ml = spacing**3 / 1000
    for seed in range(seed0, seed0 + n):
        start = time.perf_counter()
        case, tissue = make_phantom_with_tissues(shape=shape, spacing=spacing, seed=seed)
        seconds.append(time.perf_counter() - start)
        image, labels = case.image.array.astype(np.float64), case.labels.array
        for name, code in TISSUES.items():
            mask = tissue == code
            if mask.sum() >= 5:
                tissue_means[name].append(image[mask].mean())
                tissue_stds[name].append(image[mask].std())
        components, _ = connected(labels == LABELS["lesion"])
        for lesion in case.findings.lesions:
            ijk = np.round(np.linalg.solve(case.image.affine, np.r_[lesion.center_mm, 1.0])[:3]).astype(int)
            comp = components[tuple(np.clip(ijk, 0, np.asarray(labels.shape) - 1))]
            mask = components == comp if comp else np.zeros(labels.shape, bool)
            diameter = (6 * mask.sum() * spacing**3 / np.pi) ** (1 / 3)
            mean = image[mask].mean() if mask.any() else np.nan
            lesions.append((lesion, diameter, mean - density_to_hu(lesion.density)))
        if case.findings.effusion:
            effusion[case.findings.effusion.grade].append((labels == LABELS["effusion"]).sum() * voxel_ml)
        if case.findings.emphysema:
            lung = np.isin(labels, list(LOBE_LABELS.values()))
            emphysema[case.findings.emphysema.grade].append(100 * (image[lung] < -950).mean())
    return tissue_means, tissue_stds, lesions, effusion, emphysema, seconds


def _range(lo, hi):
    if lo is None:
        return f"< {hi}"
    return f"{lo}" if lo == hi else f"{lo} … {hi}"


def _verdict(values, lo, hi, tolerance=0.0):
    lo = -np.inf if lo is None else lo - tolerance
    return "yes" if all(lo <= v <= hi + tolerance for v in values) else "**NO**"


def render(args, tissue_means, tissue_stds, lesions, effusion, emphysema, seconds) -> str:
    out = [f"# Phantom HU table ({args.n} subjects, {args.shape}^3 at {args.spacing:g} mm, seeds "
           f"{args.seed0}–{args.seed0 + args.n - 1})", "",
           f"Command: `python docs/studies/phantom_hu_table.py --n {args.n} --shape {args.shape} "
           f"--spacing {args.spacing:g} --seed0 {args.seed0} --out {args.out}`", "",
           "Tissue classes come from the phantom's own tissue map (`make_phantom_with_tissues`); HU are measured",
           "on the final int16 image (correlated noise included). *Mean* is the mean of the per-subject means,",
           "*min/max* the extremes of the per-subject means, *std* the mean within-subject standard deviation.",
           "*In range* checks every per-subject mean against the tissue's target range (air: ±10 HU).", "",
           "| tissue | target HU | subjects | mean | min / max of subject means | std | in range | note |",
           "|---|---|---:|---:|---:|---:|---|---|"]
    for name in TISSUES:
        means = tissue_means.get(name)
        if not means:
            continue
        lo, hi = DESIGN_HU.get(name, (None, None))
        design = _range(lo, hi) if hi is not None else "—"
        verdict = _verdict(means, lo, hi, 10.0 if name == "air" else 0.0) if hi is not None else "—"
        out.append(f"| {name} | {design} | {len(means)} | {np.mean(means):.1f} | {min(means):.1f} / {max(means):.1f} "
                   f"| {np.mean(tissue_stds[name]):.1f} | {verdict} | {NOTES.get(name, '')} |")
    out += ["", "## Findings against ground truth", ""]
    if lesions:
        err = np.array([e for _, _, e in lesions])
        big = [(lesion, d) for lesion, d, _ in lesions if lesion.diameter_mm >= 20]
        rel = np.array([d / lesion.diameter_mm - 1 for lesion, d in big]) if big else np.array([np.nan])
        out += [f"- Lesions: {len(lesions)}; mean HU over the lesion mask minus `density_to_hu(d)`: "
                f"max |error| {np.nanmax(np.abs(err)):.2f} HU (mean {np.nanmean(err):+.2f}).",
                f"- Lesions >= 20 mm ({len(big)}): equivalent diameter from the mask volume vs ground truth: "
                f"mean {100 * np.nanmean(rel):+.1f} %, max |error| {100 * np.nanmax(np.abs(rel)):.1f} %."]
    for grade in ("small", "moderate", "large"):
        if effusion.get(grade):
            out.append(f"- Effusion {grade}: {len(effusion[grade])} subject(s), fluid volume "
                       f"{np.mean(effusion[grade]):.0f} mL (range {min(effusion[grade]):.0f}–{max(effusion[grade]):.0f}).")
    for grade in ("mild", "moderate", "severe"):
        if emphysema.get(grade):
            out.append(f"- Emphysema {grade}: {len(emphysema[grade])} subject(s), lung voxels below -950 HU "
                       f"{np.mean(emphysema[grade]):.1f} % (range {min(emphysema[grade]):.1f}–{max(emphysema[grade]):.1f}).")
    out += ["", f"Build time: {np.mean(seconds):.3f} s per subject (median {np.median(seconds):.3f} s, wall clock, "
            f"single process, {platform.machine()} {platform.python_version()}; other load on the machine not controlled).",
            ""]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="number of subjects (default 20)")
    parser.add_argument("--shape", type=int, default=64, help="voxels per side (default 64)")
    parser.add_argument("--spacing", type=float, default=5.0, help="voxel size in mm (default 5)")
    parser.add_argument("--seed0", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("docs/studies/phantom_hu.md"), help="Markdown output")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    text = render(args, *measure(args.n, args.shape, args.spacing, args.seed0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
