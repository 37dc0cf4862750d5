"""`medgen evaluate`: measure a model (fidelity, density calibration, realism, alignment, speed).

    medgen evaluate --model runs/phantom-64/pipeline --out evaluation/results/phantom-64
    medgen evaluate --out evaluation/results/smoke --quick      # the embedded model, tiny sizes
    medgen evaluate --utility --ablation runs/text-only --out evaluation/results/utility   # downstream

Writes OUT/results.json (every figure), OUT/summary.md and OUT/*.png; see evaluation/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a model: report fidelity, density calibration, realism, alignment, speed",
        description="Evaluate a report-to-volume model on held-out phrasing; writes summary.md, results.json "
                    "and PNG plots into --out.",
    )
    p.add_argument("--model", metavar="DIR", type=Path,
                   help="pipeline folder (ReportToVolumePipeline.save_pretrained); default: the embedded model")
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="output folder, e.g. evaluation/results/NAME")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test; figures are not meaningful)")
    p.add_argument("--manifest", metavar="JSONL", type=Path,
                   help="dataset manifest whose train split trains the alignment model (default: new phantoms)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="N", help="noise seeds (default 0 1 2; quick: 0 1)")
    p.add_argument("--n-reports", type=int, metavar="N", help="held-out reports (default 100; quick: 4)")
    p.add_argument("--n-calibration", type=int, metavar="N",
                   help="lesion reports swept over the density grid (default 20; quick: 2)")
    p.add_argument("--alignment-subjects", type=int, metavar="N",
                   help="real phantoms that train the alignment model (default 200; quick: 8)")
    p.add_argument("--reader-only", action="store_true",
                   help="run only the report-reader section (learned reader vs rule parser, time per report)")
    p.add_argument("--utility", action="store_true",
                   help="downstream utility benchmark: a lesion segmenter trained on real, real + generated "
                        "(--model, layout-grounded), generated only, and real + text-only (--ablation) volumes")
    p.add_argument("--ablation", metavar="DIR", type=Path,
                   help="--utility: the text-only ablation model (arm d; without it arm d is left out)")
    p.add_argument("--cache", metavar="DIR", type=Path, default=Path("runs/utility-cache"),
                   help="--utility: cache of generated volumes (by model sha256 + report + seed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results.json in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.errors import require_extra
    from medgen.evaluation import run_evaluation
    from medgen.evaluation.suite import QUICK, EvalSettings
    from medgen.pipelines.default_model import resolve_model_path
    from medgen.pipelines.validation import check_device

    if not args.reader_only:  # the reader section draws no plot
        require_extra("matplotlib", "eval")  # the plots come last: say so before any work
    device = check_device(args.device)
    if args.utility:
        return run_utility_benchmark(args, device)
    if args.manifest is not None and not args.manifest.is_file():
        raise FileNotFoundError(f"--manifest {args.manifest}: no such file")
    for name in ("n_reports", "n_calibration", "alignment_subjects"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    settings = dataclasses.replace(QUICK if args.quick else EvalSettings())
    if args.n_calibration is not None:
        settings.n_calibration = args.n_calibration
    if args.alignment_subjects is not None:
        settings.n_train_alignment = args.alignment_subjects
    results = run_evaluation(resolve_model_path(args.model), args.out, quick=args.quick, data_manifest=args.manifest,
                             device=device, seeds=args.seeds, n_reports=args.n_reports, settings=settings,
                             overwrite=args.overwrite, progress=True, reader_only=args.reader_only)
    meta = results["meta"]
    if args.reader_only:
        bars = results["reader"]["bars"]
        print(f"evaluated the report reader of {meta['model_name']} ({meta['elapsed_s']:.0f} s): "
              f"{args.out / 'summary.md'}")
        print(json.dumps({key: round(bar["value"], 4) for key, bar in bars.items()}))
        return 0
    print(f"evaluated {meta['model_name']} ({meta['n_generated_total']} volumes, {meta['elapsed_s']:.0f} s): "
          f"{args.out / 'summary.md'}")
    print(json.dumps({"speed_s_per_volume": results["speed"]["seconds_per_volume"]}))
    return 0


def run_utility_benchmark(args, device) -> int:
    import sys

    from medgen.evaluation.utility import QUICK, UtilitySettings, run_utility
    from medgen.evaluation.utility_report import plot_utility, utility_markdown
    from medgen.pipelines import ReportToVolumePipeline
    from medgen.pipelines.default_model import resolve_model_path

    layout_pipe = ReportToVolumePipeline.from_pretrained(resolve_model_path(args.model), device=device)
    ablation_pipe = (None if args.ablation is None else
                     ReportToVolumePipeline.from_pretrained(resolve_model_path(args.ablation), device=device))
    settings = dataclasses.replace(QUICK if args.quick else UtilitySettings(),
                                   phantom_version=int(layout_pipe.config.get("phantom_version", 1)))
    if args.seeds:
        settings = dataclasses.replace(settings, seeds=tuple(args.seeds))
    results = run_utility(args.out, layout_pipe=layout_pipe, ablation_pipe=ablation_pipe, settings=settings,
                          cache_dir=args.cache, progress=True)
    command = "medgen " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("medgen") else "medgen evaluate --utility"
    (args.out / "summary.md").write_text(utility_markdown(results, command), encoding="utf-8")
    plot_utility(results, args.out / "utility.png")
    print(f"utility benchmark: {args.out / 'summary.md'}")
    print(json.dumps({k: v["pass"] for k, v in results["bars"].items()}))
    return 0
