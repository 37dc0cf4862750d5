"""`medgen preview`: report -> a PNG of candidate key slices (2D, fast), to iterate on wording before 3D.

    medgen preview --report "A 25 mm solid nodule in the right lower lobe." --out p.png [--n 4] [--seed 0]

Writes OUT.png (candidates + the layout slice, labelled SYNTHETIC) and OUT.json (caption, slice findings,
seeds, warnings); with --npz also OUT.npz (hu (n, S, S) float32, labels (S, S) uint8). The same seed puts the
finding where `medgen generate` with that seed puts it. Bad input: one `medgen: error:` line, exit 2, nothing
written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("preview", help="candidate 2D key slices of a report (fast preview, PNG)",
                              description="Report -> candidate axial key slices from the 2D preview model.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--report", metavar="TEXT", help="the report text")
    src.add_argument("--report-file", metavar="FILE", type=Path, help="UTF-8 text file holding the report")
    src.add_argument("--findings", metavar="F.json", type=Path, help="findings JSON instead of a report")
    p.add_argument("--out", metavar="OUT.png", type=Path, required=True, help="output PNG (OUT.json beside it)")
    p.add_argument("--n", type=int, default=4, help="candidates (default 4)")
    p.add_argument("--seed", type=int, default=0, help="layout and noise seed (default 0)")
    p.add_argument("--steps", type=int, default=12, help="sampler steps (default 12: as realistic as 20, measured)")
    p.add_argument("--sampler", choices=("dpmpp-2m-karras", "ddim", "distilled"), default="dpmpp-2m-karras",
                   help="distilled: the progressively distilled student (no guidance branches; use --steps 8)")
    p.add_argument("--no-refiner", action="store_true", help="base UNet only (no refiner on the low-noise tail)")
    p.add_argument("--density", type=float, metavar="D", help="lesion density in [0, 1] (default: the report's)")
    p.add_argument("--guidance", type=float, default=2.0, help="text guidance weight (default 2)")
    p.add_argument("--density-guidance", type=float, default=2.0, help="density guidance weight (default 2)")
    p.add_argument("--npz", action="store_true", help="also write OUT.npz with the HU arrays and layout slice")
    p.add_argument("--model", type=Path, help="preview model folder (default: the embedded one)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args) -> int:
    from medgen.cli.generate import _read_findings
    from medgen.diffusion.guidance import Guidance
    from medgen.io.atomic import atomic_path, check_output_path
    from medgen.pipelines.validation import (
        check_guidance,
        check_report,
        check_seed,
        check_steps,
        read_report_file,
    )
    from medgen.slices.generator.pipeline import SlicePreviewPipeline
    from medgen.slices.generator.render import preview_png
    from medgen.volume import check_density

    # 1. Check every input and output before loading the model.
    if args.report is None and args.report_file is None and args.findings is None:
        raise ValueError("give --report, --report-file or --findings")
    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png, got {args.out}")
    if not 1 <= args.n <= 16:
        raise ValueError(f"--n must be in [1, 16], got {args.n}")
    check_steps(args.steps, "steps")
    check_seed(args.seed)
    guidance = Guidance(text=check_guidance(args.guidance, "guidance"),
                        density=check_guidance(args.density_guidance, "density-guidance"))
    density = check_density(args.density)
    outputs = [args.out, args.out.with_suffix(".json")] + ([args.out.with_suffix(".npz")] if args.npz else [])
    for path in outputs:
        check_output_path(path, args.overwrite)
    report = check_report(args.report) if args.report is not None else (
        read_report_file(args.report_file) if args.report_file is not None else None)
    findings = _read_findings(args.findings) if args.findings is not None else None

    # 2. Load the model, preview, write (what the layout and the reader warn about: stderr and the JSON).
    pipe = SlicePreviewPipeline.from_pretrained(args.model)
    result = pipe(report, findings=findings, n=args.n, seed=args.seed, steps=args.steps, sampler=args.sampler,
                  guidance=guidance, density=density, use_refiner=not args.no_refiner)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    preview_png(result, args.out, overwrite=True)
    sidecar = {"synthetic": True, "caption": result.caption, "slice": result.slice_findings,
               "findings": result.layout.findings.to_dict(), "seeds": result.seeds, "warnings": result.warnings,
               "sampler": args.sampler, "steps": args.steps, "refiner": not args.no_refiner}
    with atomic_path(args.out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.npz:
        import numpy as np

        with atomic_path(args.out.with_suffix(".npz")) as tmp:
            np.savez_compressed(tmp, hu=result.hu, labels=result.labels)
    for message in result.warnings:
        print(f"medgen: warning: {message}", file=sys.stderr)
    print(f"wrote {args.out} ({args.n} candidates): {result.caption}")
    return 0
