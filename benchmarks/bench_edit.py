"""Benchmark of `medgen edit`: add one lesion to real phantoms that have none, then measure with the finding
analyzer (which never sees the request) whether it landed on the requested side and lobe at the requested size
and density, that nothing outside the regenerated margin changed, and whether the margin's border shows.

    .venv/bin/python benchmarks/bench_edit.py --model runs/phantom-64-layout/pipeline --n 40   # -> benchmarks/results/edit/
    .venv/bin/python benchmarks/bench_edit.py --quick      # smoke run: the embedded model, one case per grid

Cases: phantoms of an untouched seed range without findings, at the model's grid (64³ × 5 mm); one lesion each,
the lobe cycling over the five lobes, 15-40 mm, density uniform in [0.1, 1], any margin shape. Each case is
edited twice with the same seed: with the default HU calibration and without it (the renderer alone). A few
more cases on other input grids (96³ × 3 mm, 80 × 72 × 64 at 4 mm) check exactness off the model's grid.
"""

from __future__ import annotations

import time
from pathlib import Path

import harness
import numpy as np
from tqdm import tqdm

from medgen.analysis.findings import analyze_volume
from medgen.edit import EditPipeline
from medgen.evaluation.edit_metrics import outside_max_abs_diff, score_added_lesion, seam_ratio
from medgen.findings import LOBES, MARGINS, Findings, Lesion
from medgen.phantom.chest import make_phantom
from medgen.volume import Volume

SEED0 = 880_000  # subject seeds no other part of medgen draws from
OTHER_GRIDS = [((96, 96, 96), 3.0), ((80, 72, 64), 4.0)]


def make_case(i: int, shape, spacing: float):
    rng = np.random.default_rng(SEED0 + i)
    case = make_phantom(Findings(), shape=shape, spacing=spacing, seed=SEED0 + i)
    lesion = Lesion(lobe=LOBES[i % len(LOBES)], diameter_mm=round(float(rng.uniform(15, 40)), 1),
                    density=round(float(rng.uniform(0.1, 1.0)), 2), margin=str(rng.choice(MARGINS)))
    volume = Volume(np.asarray(case.image.array, np.float32), case.image.affine.copy())
    return volume, case, lesion


def lobe_dice(pipe, volume: Volume, truth: np.ndarray) -> dict:
    """Dice of the edit's segmentation-derived lobes against the phantom's true lobes (same grid)."""
    from medgen.edit.anatomy import segment_anatomy
    from medgen.findings import LOBE_LABELS
    from medgen.phantom.anatomy import Grid

    anatomy = segment_anatomy(np.asarray(volume.array, np.float32), Grid.from_affine(volume.shape, volume.affine))
    out = {}
    for lobe, value in LOBE_LABELS.items():
        t, p = truth == value, anatomy.labels == value
        out[lobe] = 2.0 * float((t & p).sum()) / max(float(t.sum() + p.sum()), 1.0)
    return out


def run_case(pipe, volume, lesion, seed: int, calibrate: bool, margin_mm: float = 15.0) -> dict:
    started = time.perf_counter()
    result = EditPipeline.from_pipe(pipe)(volume, findings=Findings(lesions=[lesion]), seed=seed, hu_calibration=calibrate,
                       margin_mm=margin_mm, progress=False)
    elapsed = time.perf_counter() - started
    placed = result.findings.lesions[-1]
    edited, original = np.asarray(result.volume.array), np.asarray(volume.array)
    spacing = np.abs(np.diag(volume.affine)[:3])
    score = score_added_lesion(analyze_volume(result.volume).lesions, placed)
    return {**score, "outside_max_abs_hu": outside_max_abs_diff(np.rint(edited), original, result.edit_region),
            "seam_ratio": seam_ratio(edited, original, result.edit_region, spacing),
            "region_voxels": int(result.edit_region.sum()), "seconds": round(elapsed, 2),
            "center_mm": list(placed.center_mm)}


def summarise(rows: list[dict]) -> dict:
    def pct(key):
        return round(100.0 * float(np.mean([r[key] for r in rows])), 1)

    hu = [abs(r["hu_error"]) for r in rows if r["hu_error"] is not None]
    seams = [r["seam_ratio"] for r in rows if r["seam_ratio"] is not None]
    return {"n": len(rows), "found": pct("found"), "side": pct("side"), "side_and_lobe": round(100.0 * float(np.mean(
        [r["side"] and r["lobe"] for r in rows])), 1), "size_30": pct("size_30"), "hu_60": pct("hu_60"),
        "hu_mae": round(float(np.mean(hu)), 1) if hu else None,
        "outside_max_abs_hu": max(r["outside_max_abs_hu"] for r in rows),
        "seam_ratio_mean": round(float(np.mean(seams)), 3), "seam_ratio_max": round(float(np.max(seams)), 3),
        "seconds_median": round(float(np.median([r["seconds"] for r in rows])), 2)}


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        "# Editing an existing CT: add one lesion, change nothing else", "",
        f"Command: `{results['command']}`. CPU, 2 cores, no GPU. Model: `{s['model']}`.", "",
        f"{s['n']} phantoms without findings (subject seeds {SEED0}…), 64³ × 5 mm, one lesion each (lobe cycling over "
        "the five lobes, 15–40 mm, density uniform in [0.1, 1], any margin shape), margin "
        f"{s['margin_mm']:g} mm, seed 0. Scored by the finding analyzer, which never sees the request: the "
        "analyzer's lesion nearest to the placed centre (within radius + 10 mm).", "",
        "| figure | bar | with HU calibration (default) | renderer alone (`--no-hu-calibration`) |",
        "| --- | --- | --- | --- |",
    ]
    a, b = results["calibrated"], results["raw"]
    for key, name, bar, unit in [("found", "lesion found", "–", "%"), ("side_and_lobe", "side and lobe", "≥ 95 %", "%"),
                                 ("size_30", "size within ±30 %", "≥ 85 %", "%"),
                                 ("hu_60", "mean HU within 60 HU of target", "–", "%"),
                                 ("hu_mae", "mean HU error (found lesions)", "≤ 60 HU", " HU"),
                                 ("outside_max_abs_hu", "max \\|Δ\\| outside the margin", "0 HU", " HU"),
                                 ("seam_ratio_mean", "seam: border gradient / original's (mean)", "≤ 1.2", ""),
                                 ("seam_ratio_max", "seam ratio (worst case)", "–", ""),
                                 ("seconds_median", "seconds per edit (median)", "–", " s")]:
        lines.append(f"| {name} | {bar} | {a[key]}{unit} | {b[key]}{unit} |")
    g = results["other_grids"]
    lines += ["", f"Other input grids ({len(g['rows'])} cases: "
              + ", ".join(f"{'×'.join(map(str, shape))} at {sp:g} mm" for shape, sp in OTHER_GRIDS)
              + f"): max |Δ| outside the margin {g['summary']['outside_max_abs_hu']} HU, lesion found "
              f"{g['summary']['found']} %, side and lobe {g['summary']['side_and_lobe']} %.", "",
              "Lobes of the segmentation the edit places lesions in, Dice against the phantoms' true lobes (mean over "
              "the cases): " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in results["lobe_dice"].items()) + ".",
              "", "Seam ratio: mean gradient magnitude of the edited volume on the outermost voxel layer of the "
              "regenerated region, over the original volume's on the same voxels (1 = no added edge)."]
    return "\n".join(lines) + "\n"


def figure(pipe, path: Path, n: int = 3) -> None:
    """Axial slices through the added lesion: before, after, difference, for `n` cases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for row in range(n):
        volume, _, lesion = make_case(row, (64, 64, 64), 5.0)
        result = EditPipeline.from_pipe(pipe)(volume, findings=Findings(lesions=[lesion]), seed=0, progress=False)
        centre = result.findings.lesions[-1].center_mm
        k = int(round((centre[2] - volume.affine[2, 3]) / volume.affine[2, 2]))
        # radiological display (as medgen's previews): rows anterior -> posterior, patient's right on the left
        before, after = (np.asarray(v.array)[::-1, ::-1, k].T for v in (volume, result.volume))
        title = f"{lesion.lobe.replace('_', ' ')} {lesion.diameter_mm:g} mm d={lesion.density:g}"
        for ax, img, name, kw in [(axes[row, 0], before, "input", dict(cmap="gray", vmin=-1000, vmax=400)),
                                  (axes[row, 1], after, "edited: " + title, dict(cmap="gray", vmin=-1000, vmax=400)),
                                  (axes[row, 2], after - before, "edited - input (HU)", dict(cmap="coolwarm",
                                                                                            vmin=-800, vmax=800))]:
            ax.imshow(img, **kw)
            ax.set_title(name, fontsize=8)
            ax.axis("off")
    fig.suptitle("SYNTHETIC — medgen edit (axial slice through the added lesion; patient's right on the image left)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = harness.parser("edit", __doc__)
    parser.add_argument("--model", type=Path, default=None,
                        help="layout-grounded pipeline folder (default: the embedded model)")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--margin-mm", type=float, default=15.0)
    args = harness.parse(parser, quick={"n": 1})
    from medgen.pipelines import ReportToVolumePipeline
    from medgen.pipelines.default_model import resolve_model_path

    args.model = resolve_model_path(args.model)
    pipe = ReportToVolumePipeline.from_pretrained(args.model)
    rows = {"calibrated": [], "raw": []}
    dice = []
    for i in tqdm(range(args.n), desc="edits"):
        volume, case, lesion = make_case(i, (64, 64, 64), 5.0)
        dice.append(lobe_dice(pipe, volume, np.asarray(case.labels.array)))
        for key, calibrate in (("calibrated", True), ("raw", False)):
            rows[key].append({"case": i, "lesion": lesion.to_dict(),
                              **run_case(pipe, volume, lesion, seed=0, calibrate=calibrate,
                                           margin_mm=args.margin_mm)})
    other = []
    for j, (shape, spacing) in enumerate(OTHER_GRIDS * (1 if args.quick else 2)):
        volume, _, lesion = make_case(10_000 + j, shape, spacing)
        other.append({"grid": [list(shape), spacing], **run_case(pipe, volume, lesion, seed=0, calibrate=True,
                                                                 margin_mm=args.margin_mm)})
    results = {"command": "python benchmarks/bench_edit.py --model " + str(args.model) + f" --n {args.n}",
               "settings": {"model": str(args.model), "n": args.n, "margin_mm": args.margin_mm},
               **{k: summarise(v) for k, v in rows.items()}, "rows": rows,
               "other_grids": {"rows": other, "summary": summarise(other)},
               "lobe_dice": {k: round(float(np.mean([d[k] for d in dice])), 3) for k in dice[0]}}
    harness.write_json(args.out, results)
    harness.write_summary(args.out, markdown(results))
    figure(pipe, args.out / "edit_examples.png", n=1 if args.quick else 3)


if __name__ == "__main__":
    main()
