"""Time `build_synthetic_dataset`: the full set with all workers, and a subset in one process (the baseline).

    python evaluation/bench_dataset_build.py --n 2000 --subset 100

Prints a table and writes evaluation/dataset_build.md. Output datasets go to a temporary folder that is
deleted afterwards (pass --keep DIR to keep the full one).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="subjects in the full build (default 2000)")
    parser.add_argument("--subset", type=int, default=100, help="subjects in the 1-worker baseline (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="workers for the full build (default 2)")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--spacing", type=float, default=5.0)
    parser.add_argument("--dicom-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the full dataset in this folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("dataset_build.md"))
    args = parser.parse_args(argv)

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
    header = "| build | subjects | workers | wall (s) | ms / subject | subjects / s | size (MB) |"
    rows = [f"| {name} | {r['n']} | {r['workers']} | {r['seconds']:.1f} | {r['per_case_ms']:.1f} | "
            f"{r['cases_per_s']:.1f} | {r['mb']:.0f} |" for name, r in (("baseline", baseline), ("full", full))]
    command = "python evaluation/bench_dataset_build.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# Synthetic dataset build time",
        "",
        f"`{command.strip()}` — {args.shape}^3 voxels at {args.spacing:g} mm, dicom_fraction "
        f"{args.dicom_fraction:g}, seed {args.seed}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}.",
        "",
        header,
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Per-subject speed-up of {args.workers} workers over 1 (same run): **{speedup:.2f}x**.",
        f"1-minute load average before / after: {load_before:.1f} / {load_after:.1f} (other processes on the "
        "machine slow both builds).",
        "",
    ])
    print(text)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
