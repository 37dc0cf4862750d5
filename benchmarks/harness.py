"""What every benchmark in this folder shares: its options, timing against a baseline measured in the same
run, and a markdown table that is printed and written next to the script's results.

A benchmark script is a performance or measurement run on medgen's public API. Each one:

- builds its parser with `parser(name, doc)`, which adds ``--quick`` (a smoke run: the smallest sizes that still
  exercise every code path, seconds to a few minutes) and ``--out`` (default ``benchmarks/results/<name>/``; a
  quick run writes to a temporary folder unless ``--out`` is given, so it never overwrites recorded results);
- times what it measures with `time_call` / `time_pair`, the baseline in the same process and run, interleaved,
  so that load from other processes hits both alike;
- writes ``summary.md`` (tables from `markdown_table`) and, where it has more, ``results.json`` into ``--out``
  with `write_summary` / `write_json` (atomic, printed too).

    .venv/bin/python benchmarks/bench_dataset_build.py --quick      # smoke run
    .venv/bin/python benchmarks/bench_dataset_build.py              # the recorded run -> benchmarks/results/dataset_build/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the shared options: ``--quick`` and ``--out`` (see the module docstring)."""
    p = argparse.ArgumentParser(prog=f"benchmarks/bench_{name}.py", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run at the smallest sizes (writes to a temporary folder unless --out is given)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default: benchmarks/results/{name}/)")
    p.set_defaults(bench_name=name)
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          quick: dict | None = None) -> argparse.Namespace:
    """Parse `argv`; under ``--quick`` the options named in `quick` take those values unless given on the command
    line, and ``--out`` defaults to a temporary folder. ``args.out`` is always a folder that exists."""
    args = p.parse_args(argv)
    if args.quick and quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for key, value in quick.items():
            flag = "--" + key.replace("_", "-")
            if not any(a == flag or a.startswith(flag + "=") for a in given):
                setattr(args, key, value)
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "medgen-bench-quick" / args.bench_name if args.quick
                    else RESULTS / args.bench_name)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this benchmark, as recorded in its summary (script path relative to the repo)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join(["python", str(shown), *(sys.argv[1:] if argv is None else argv)]).strip()


def machine() -> str:
    """One line on the hardware and software the figures were measured with."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPU cores, {gpu}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")


@dataclass
class Timing:
    """Seconds of repeated calls: median, fastest, spread, every run."""

    median_s: float
    min_s: float
    stdev_s: float
    runs: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def _timing(runs: list[float]) -> Timing:
    return Timing(statistics.median(runs), min(runs), statistics.stdev(runs) if len(runs) > 1 else 0.0, runs)


def time_call(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1,
              sync: Callable[[], None] | None = None) -> Timing:
    """Time `repeats` calls of `fn` after `warmup` untimed ones (`sync`, e.g. ``torch.cuda.synchronize``, after
    each call)."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        runs.append(time.perf_counter() - start)
    return _timing(runs)


def time_pair(candidate: Callable[[], object], baseline: Callable[[], object], *, repeats: int = 3,
              warmup: int = 1, sync: Callable[[], None] | None = None) -> dict:
    """Time `candidate` against `baseline` in the same run, interleaved round by round; ``ratio`` = candidate /
    baseline on the medians (< 1: the candidate is faster), ``ratio_min`` on the fastest runs."""
    for _ in range(warmup):
        candidate()
        baseline()
    runs: dict[str, list[float]] = {"candidate": [], "baseline": []}
    for _ in range(repeats):
        for key, fn in (("candidate", candidate), ("baseline", baseline)):
            start = time.perf_counter()
            fn()
            if sync:
                sync()
            runs[key].append(time.perf_counter() - start)
    c, b = _timing(runs["candidate"]), _timing(runs["baseline"])
    return {"candidate": c, "baseline": b, "ratio": c.median_s / b.median_s, "ratio_min": c.min_s / b.min_s}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A markdown table; `align` is one character per column: ``l`` (default) or ``r``."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join("–" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_summary(out: Path, text: str, name: str = "summary.md", *, echo: bool = True) -> Path:
    """Write the benchmark's markdown into `out` (atomically) and print it."""
    path = out / name
    _atomic_write(path, text.rstrip("\n") + "\n")
    if echo:
        print(text)
        print(f"wrote {path}")
    return path


def write_json(out: Path, results: dict, name: str = "results.json") -> Path:
    """Write the benchmark's figures into `out` as JSON (atomically)."""
    path = out / name
    _atomic_write(path, json.dumps(results, indent=2, ensure_ascii=False,
                                   default=lambda o: o.to_dict() if hasattr(o, "to_dict") else float(o)) + "\n")
    return path
