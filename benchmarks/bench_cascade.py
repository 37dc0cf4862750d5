"""The resolution cascade on this machine: cost and peak memory per output size, seams, and whether the
findings survive refinement.

    .venv/bin/python benchmarks/bench_cascade.py [--model DIR] [--sizes 64 128 256 512] [--fidelity 20]
        [--out benchmarks/results/cascade] [--only seams fidelity]
    .venv/bin/python benchmarks/bench_cascade.py --quick      # smoke run: 64^3 and 128^3, no fidelity part

1. Cost: one `medgen generate` per size (same report, seed), each in its own process (wall time and peak
   RSS of that process, `ru_maxrss`), writing NIfTI + sidecar + PNG as a user would. Cost per output voxel
   is compared with the one at 128^3 (the bar: 512^3 within 1.5x).
2. Seams: every stage is run on a generated volume with its tile grid; the mean absolute voxel step
   across tile borders over the mean step elsewhere (1.0 = no seam; the bar is <= 1.2).
3. Findings: `--fidelity N` held-out reports generated at 64^3 and at 128^3 (same seeds), each analyzed by the
   finding analyzer; side/lobe/recall at both grids and the per-lesion agreement between them.
Writes ``summary.md``, ``results.json`` and ``cost.png`` under `--out`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import numpy as np

REPORT = "A 35 mm solid mass in the right upper lobe with spiculated margins. Small left pleural effusion."


def child(args) -> None:
    """Run one generation through the CLI in this process; print wall time and peak RSS as JSON."""
    from medgen.cli.main import main

    started = time.perf_counter()
    argv = ["generate", "--report", REPORT, "--out", str(args.child_out), "--shape", *[str(args.child)] * 3,
            "--seed", "0", "--overwrite"]
    if args.model:
        argv += ["--model", str(args.model)]
    code = main(argv)
    print(json.dumps({"code": code, "wall_s": time.perf_counter() - started, "peak_rss_gib": peak_rss_gib()}))


def peak_rss_gib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a
    child started by a large parent would report the parent's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure_cost(sizes, model) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            cmd = [sys.executable, __file__, "--child", str(size), "--child-out", f"{tmp}/ct{size}.nii.gz"]
            if model:
                cmd += ["--model", str(model)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"generation at {size}^3 failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            sidecar = json.loads(Path(f"{tmp}/ct{size}.json").read_text())
            row.update(size=size, voxels=size**3, spacing_mm=sidecar["spacing"][0], stages=sidecar["grid"]["stages"],
                       us_per_voxel=row["wall_s"] / size**3 * 1e6)
            rows.append(row)
            print(f"{size}^3: {row['wall_s']:.1f} s, peak RSS {row['peak_rss_gib']:.2f} GiB", flush=True)
    return rows


def seam_ratio(volume: np.ndarray, border_every: int, *, same_phase: bool = True) -> float:
    """Mean |step| across planes at multiples of `border_every` over the mean |step| elsewhere (all axes).

    A x2 stage's output steps alternate between steps inside one input voxel and steps across two (a tile
    border, at an even output index, is always the second kind): with `same_phase` the baseline is the
    steps of the border's kind away from borders, so a stage's own x2 structure does not read as a seam.
    """
    across, elsewhere = [], []
    for axis in range(3):
        steps = np.abs(np.diff(volume, axis=axis))  # step k lies between voxel k and k + 1
        at = np.zeros(steps.shape[axis], dtype=bool)
        at[border_every - 1::border_every] = True
        baseline = ~at
        if same_phase:
            baseline &= (np.arange(steps.shape[axis]) % 2) == ((border_every - 1) % 2)
        across.append(np.compress(at, steps, axis=axis).ravel())
        elsewhere.append(np.compress(baseline, steps, axis=axis).ravel())
    across, elsewhere = np.concatenate(across), np.concatenate(elsewhere)
    return float(across.mean() / elsewhere.mean()) if across.size else float("nan")


def measure_seams(pipe, n_stages: int) -> list[dict]:
    """Each stage run with its tile grid and with a shifted one (tile - 5 input voxels: borders elsewhere).

    Few planes are tile borders (one per axis at 128^3), so their step ratio also measures whatever anatomy
    lies there; the same planes of the shifted tiling carry the same anatomy without a border, so the ratio of
    the two ratios is what the tiling itself adds (1.0: nothing), and the max difference checks exactness.
    """
    hu = pipe(REPORT, seed=0, progress=False).volume.array.astype(np.float32)
    rows = []
    for k, stage in enumerate(pipe.cascade_stages(n_stages), start=1):
        tile = getattr(stage, "tile", 64)
        if max(hu.shape) <= tile:  # make the stage tile this volume so there are borders to check
            stage.tile = tile = max(8, hu.shape[0] // 2 - 3)
        out = stage(hu)
        stage.tile = tile - 5
        shifted = stage(hu)
        stage.tile = tile
        at_borders, same_planes_shifted = seam_ratio(out, 2 * tile), seam_ratio(shifted, 2 * tile)
        rows.append({"stage": k, "name": stage.name, "shape": list(out.shape), "tile_input_voxels": tile,
                     "border_interior_ratio": at_borders,
                     "border_all_steps_ratio": seam_ratio(out, 2 * tile, same_phase=False),
                     "same_planes_shifted_tiling_ratio": same_planes_shifted,
                     "tiling_seam_ratio": at_borders / same_planes_shifted,
                     "max_abs_diff_shifted_tiling_hu": float(np.abs(out - shifted).max())})
        hu = out
    return rows


def measure_fidelity(pipe, n: int) -> dict:
    from medgen.evaluation.fidelity import PipelineGenerator, make_heldout_cases, score_fidelity

    native = tuple(pipe.config["shape"])
    out = {}
    for factor in (1, 2):
        shape = tuple(s * factor for s in native)
        spacing = tuple(s / factor for s in pipe.config["spacing"])
        cases = make_heldout_cases(n, shape=shape, spacing=spacing)
        summary, _, records = score_fidelity(cases, PipelineGenerator(pipe, shape=shape), seeds=[0], progress=True)
        out[f"{shape[0]}"] = {"summary": summary, "records": records}
    return out


def markdown(results: dict) -> str:
    lines = ["# Resolution cascade: cost, memory, seams, findings", "",
             f"Model `{results['model']}`; stages: {', '.join(results['stage_names'])}. "
             "Command: `.venv/bin/python benchmarks/bench_cascade.py`. Hardware: "
             f"{results['hardware']}."
             + (f" Cost rows measured with `{results['cost_model']}` before a re-measure (`--only`)."
                if results.get("cost_model", results["model"]) != results["model"] else ""), "",
             "| output | spacing (mm) | wall (s) | peak RSS (GiB) | µs per output voxel | vs 128³ |",
             "| --- | --- | --- | --- | --- | --- |"]
    base = next((r["us_per_voxel"] for r in results["cost"] if r["size"] == 128), None)
    for r in results["cost"]:
        ratio = f"{r['us_per_voxel'] / base:.2f}x" if base else "-"
        lines.append(f"| {r['size']}³ | {r['spacing_mm']:g} | {r['wall_s']:.1f} | {r['peak_rss_gib']:.2f} | "
                     f"{r['us_per_voxel']:.3f} | {ratio} |")
    lines += ["", "| stage | output | tile (input voxels) | border / interior step (same x2 phase) | "
              "same planes, shifted tiling | seam added by tiling | max \\|tiled − shifted\\| (HU) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["seams"]:
        shifted = r.get("same_planes_shifted_tiling_ratio")
        added, diff = r.get("tiling_seam_ratio"), r.get("max_abs_diff_shifted_tiling_hu")
        lines.append(f"| {r['stage']}: {r['name']} | {'x'.join(map(str, r['shape']))} | {r['tile_input_voxels']} | "
                     f"{r['border_interior_ratio']:.3f} | {'-' if shifted is None else f'{shifted:.3f}'} | "
                     f"{'-' if added is None else f'{added:.3f}'} | {'-' if diff is None else f'{diff:.4f}'} |")
    lines += ["", "A tile border of a x2 stage always falls between two output voxels that come from different input "
              "voxels; its steps are compared with the other steps of that kind. Border planes are few (one per axis "
              "at 128³), so that ratio also measures the anatomy lying on them: the same planes of a run whose tile "
              "borders lie elsewhere (tile − 5) carry the same anatomy without a border, and their quotient is the "
              "seam the tiling adds (1.0 = none)."]
    if results.get("fidelity"):
        lines += ["", f"Findings at the native grid and after one x2 stage ({results['n_fidelity']} held-out "
                  "reports, seed 0, analyzer on each volume):", "",
                  "| grid | lesion side | lobe | recall | effusion side | normal specificity |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for size, block in results["fidelity"].items():
            s = block["summary"]["overall"]
            lines.append(f"| {size}³ | {_pct(s, 'lesion_side')} | {_pct(s, 'lesion_lobe')} | "
                         f"{_pct(s, 'lesion_detected')} | {_pct(s, 'effusion_side')} | "
                         f"{_pct(s, 'normal_specificity')} |")
    return "\n".join(lines) + "\n"


def _pct(summary: dict, key: str) -> str:
    value = summary.get(key, {})
    value = value.get("mean") if isinstance(value, dict) else value
    return "-" if value is None else f"{100 * value:.1f} %"


def plot(cost: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    voxels = [r["voxels"] for r in cost]
    ax.loglog(voxels, [r["wall_s"] for r in cost], "o-", label="wall time (s)")
    ax.loglog(voxels, [r["peak_rss_gib"] for r in cost], "s-", label="peak RSS (GiB)")
    ax.set_xlabel("output voxels")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("medgen cascade on 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write(results: dict, out: Path) -> None:
    """results.json + summary.md under `out`; the summary is printed too."""
    harness.write_json(out, results)
    harness.write_summary(out, markdown(results))


def main() -> None:
    parser = harness.parser("cascade", __doc__)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--fidelity", type=int, default=20, help="held-out reports at 64^3 and 128^3 (0: skip)")
    parser.add_argument("--only", nargs="+", choices=["seams", "fidelity"],
                        help="re-measure only these parts, keeping the other figures of OUT/results.json "
                             "(e.g. after changing the embedded model)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = harness.parse(parser, quick={"sizes": [64, 128], "fidelity": 0})
    if args.child:
        return child(args)
    import os
    import platform

    from medgen.pipelines import ReportToVolumePipeline
    from medgen.pipelines.default_model import resolve_model_path

    model = resolve_model_path(args.model)
    pipe = ReportToVolumePipeline.from_pretrained(model)
    stages = max(int(np.log2(max(args.sizes) / pipe.config["shape"][0])), 0)
    if args.only:
        results = json.loads((args.out / "results.json").read_text())
        results.setdefault("cost_model", results["model"])  # the cost rows stay those of the model that ran them
        results["model"] = str(model)
        if "seams" in args.only:
            results["seams"] = measure_seams(pipe, stages)
        if "fidelity" in args.only and args.fidelity:
            results["n_fidelity"] = args.fidelity
            results["fidelity"] = measure_fidelity(pipe, args.fidelity)
        return write(results, args.out)
    results = {"model": str(model), "hardware": f"{os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}",
               "stage_names": [s.name for s in pipe.cascade_stages(stages)]}
    results["cost"] = measure_cost(args.sizes, args.model)
    results["seams"] = measure_seams(pipe, stages)
    if args.fidelity:
        results["n_fidelity"] = args.fidelity
        results["fidelity"] = measure_fidelity(pipe, args.fidelity)
    plot(results["cost"], args.out / "cost.png")
    write(results, args.out)


if __name__ == "__main__":
    main()
