"""Time `build_synthetic_dataset`: the full set with all workers, and a subset in one process (the baseline,
measured in the same run).

    python benchmarks/bench_dataset_build.py --n 2000 --subset 100
    python benchmarks/bench_dataset_build.py --quick                  # smoke run, seconds

Prints a table and writes benchmarks/results/dataset_build/summary.md. Output datasets go to a temporary
folder that is deleted afterwards (pass --keep DIR to keep the full one).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import harness

from medgen.dataset.builder import build_synthetic_dataset


def _folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _timed_build(out: Path, n: int, workers: int, args) -> dict:
    start = time.perf_counter()
    build_synthetic_dataset(out, n=n, shape=args.shape, spacing=args.spacing, seed=args.seed,
                            dicom_fraction=args.dicom_fraction, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    return {"n": n, "workers": workers, "seconds": seconds, "per_case_ms": 1000 * seconds / n,
            "cases_per_s": n / seconds, "mb": _folder_mb(out)}


def main(argv=None) -> int:
    parser = harness.parser("dataset_build", __doc__)
    parser.add_argument("--n", type=int, default=2000, help="subjects in the full build (default 2000)")
    parser.add_argument("--subset", type=int, default=100, help="subjects in the 1-worker baseline (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="workers for the full build (default 2)")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=5.0)
    parser.add_argument("--dicom-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the full dataset in this folder")
    args = harness.parse(parser, argv, quick={"n": 4, "subset": 2, "shape": 32, "spacing": 10.0})

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="medgen-bench-") as tmp:
        tmp = Path(tmp)
        baseline = _timed_build(tmp / "baseline", args.subset, 1, args)
        shutil.rmtree(tmp / "baseline")
        full = _timed_build(tmp / "full", args.n, args.workers, args)
        if args.keep:
            shutil.move(str(tmp / "full"), args.keep)

    load_after = os.getloadavg()[0]
    speedup = baseline["per_case_ms"] / full["per_case_ms"]
    rows = [(name, r["n"], r["workers"], f"{r['seconds']:.1f}", f"{r['per_case_ms']:.1f}", f"{r['cases_per_s']:.1f}",
             f"{r['mb']:.0f}") for name, r in (("baseline", baseline), ("full", full))]
    text = "\n".join([
        "# Synthetic dataset build time",
        "",
        f"`{harness.command_line(argv)}` — {args.shape}^3 voxels at {args.spacing:g} mm, dicom_fraction "
        f"{args.dicom_fraction:g}, seed {args.seed}; {harness.machine()}.",
        "",
        harness.markdown_table(["build", "subjects", "workers", "wall (s)", "ms / subject", "subjects / s",
                                "size (MB)"], rows, "lrrrrrr"),
        "",
        f"Per-subject speed-up of {args.workers} workers over 1 (same run): **{speedup:.2f}x**.",
        f"1-minute load average before / after: {load_before:.1f} / {load_after:.1f} (other processes on the "
        "machine slow both builds).",
    ])
    harness.write_summary(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
