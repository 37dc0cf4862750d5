"""`medgen generate --renderer maisi --maisi DIR ...`: the MAISI renderer behind medgen's reader and layout.

    medgen generate --renderer maisi --maisi models/maisi --device cuda \\
        --report "A 30 mm solid mass in the right lower lobe. Small left pleural effusion." --out ct.nii.gz

Grid (``--shape`` / ``--spacing``, default 512 x 512 x 256 at 0.75 x 0.75 x 1.25 mm), outputs, the MAISI folder's
files and configs and the anatomy file are all checked before any weights load; a bad one is one
``medgen: error:`` line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_maisi_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--renderer", choices=("embedded", "maisi"), default="embedded",
                   help="what draws the CT: the embedded model (default) or NVIDIA MAISI (--maisi DIR, a GPU)")
    p.add_argument("--maisi", metavar="DIR", type=Path,
                   help="MAISI folder (`medgen models fetch maisi --out DIR`; docs/maisi.md)")
    p.add_argument("--anatomy", metavar="SEG.nii.gz", type=Path,
                   help="MAISI renderer: your segmentation to draw the findings in, instead of a mask from MAISI's "
                        "candidate database (a missing body label is synthesised)")
    p.add_argument("--anatomy-ids", choices=("maisi", "totalseg"), default="maisi",
                   help="label ids of --anatomy: MAISI's (default) or TotalSegmentator v2 'total'")


def _check_arguments(args) -> None:
    if args.renderer != "maisi":
        raise ValueError("--maisi / --anatomy go with --renderer maisi")
    if args.maisi is None:
        raise ValueError("--renderer maisi needs --maisi DIR (a MAISI folder: `medgen models fetch maisi --out DIR`)")
    for flag, value in (("--manifest", args.manifest), ("--layout", args.layout), ("--guidance", args.guidance),
                        ("--density-guidance", args.density_guidance), ("--fov", args.fov)):
        if value is not None:
            raise ValueError(f"{flag} is not available with --renderer maisi (one report at a time; the grid is "
                             "--shape and --spacing)")
    if args.model is not None:
        raise ValueError("--model is the embedded renderer's; MAISI reads its folder from --maisi")


def run_maisi(args: argparse.Namespace) -> int:
    import warnings

    from medgen.errors import InputFileError
    from medgen.pipelines.result import plan_outputs
    from medgen.pipelines.validation import (
        check_device,
        check_report,
        check_seed,
        check_steps,
        read_report_file,
    )
    from medgen.render.maisi import DEFAULT_SHAPE, DEFAULT_SPACING, MaisiRenderer, check_maisi_grid
    from medgen.volume import check_density

    # 1. Check every input and output before loading anything.
    _check_arguments(args)
    spacing = DEFAULT_SPACING if args.spacing is None else args.spacing
    if len(spacing) not in (1, 3):
        raise ValueError(f"--spacing takes one value or three (X Y Z), got {len(spacing)}")
    shape, spacing = check_maisi_grid(tuple(args.shape) if args.shape else DEFAULT_SHAPE, spacing)
    findings = _read_findings(args.findings) if args.findings is not None else None
    if args.out is None or args.out_dir is not None:
        raise ValueError("--renderer maisi writes one volume: give --out OUT.nii.gz (not --out-dir)")
    report = read_report_file(args.report_file) if args.report_file is not None else (
        None if args.report is None else check_report(args.report))
    if report is None and findings is None:
        raise ValueError("give --report, --report-file or --findings")
    density, seed, out, dicom_dir = check_density(args.density), check_seed(args.seed), args.out, args.dicom_out
    if args.steps is not None:
        check_steps(args.steps, "steps")
    if args.anatomy is not None and not args.anatomy.is_file():
        raise InputFileError(args.anatomy, "anatomy segmentation not found" if not args.anatomy.exists()
                             else "not a regular file")
    plan_outputs(out, dicom_dir=dicom_dir, preview=not args.no_preview, overwrite=args.overwrite,
                 labels=True, findings=True)
    device = check_device(args.device)
    renderer = MaisiRenderer(args.maisi, device=device)  # configs and file list only: no weights yet

    # 2. The reader (when there is a report), then MAISI.
    from medgen.pipelines.maisi import MaisiPipeline
    from medgen.reader import ReaderWarning

    reader = None
    if findings is None:
        from medgen.io.weights import quiet_transformers
        from medgen.pipelines.default_model import resolve_model_path
        from medgen.reader import ReportReader

        with quiet_transformers():
            reader = ReportReader.from_pretrained(resolve_model_path(None) / "reader")
    pipe = MaisiPipeline(renderer, reader)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)
        result = pipe(report, findings=findings, density=density, seed=seed, shape=shape, spacing=spacing,
                      anatomy=args.anatomy, anatomy_ids=args.anatomy_ids, steps=args.steps, progress=True)
    prov = result.provenance
    for message in [*prov.get("reader_warnings", []), *prov["layout"]["warnings"]]:
        print(f"medgen: warning: {out.name}: {message}", file=sys.stderr)
    for note in composed_notes(prov["maisi"]):
        print(f"medgen: note: {out.name}: {note}", file=sys.stderr)
    written = result.save(out, dicom_dir=dicom_dir, preview=not args.no_preview, overwrite=args.overwrite)
    print("\n".join(str(path) for path in written.values()))
    return 0


def _read_findings(path: Path):
    from medgen.errors import InputFileError
    from medgen.findings import Findings, FindingsError

    if not path.is_file():
        raise InputFileError(path, "findings file not found" if not path.exists() else "not a regular file")
    try:
        return Findings.from_json(path.read_text(encoding="utf-8"))
    except (FindingsError, UnicodeDecodeError) as err:
        raise InputFileError(path, str(err)) from None


def composed_notes(record: dict) -> list[str]:
    """One line per finding MAISI has no label for and medgen composed after decoding (docs/maisi.md)."""
    notes = []
    if record.get("standin"):
        notes.append("rendered by the stand-in MAISI folder (random weights): the image is noise, not CT")
    for lesion in record.get("lesions", []):
        notes.append(f"lesion {lesion['lesion']} calibrated to {lesion['target_hu']:g} HU (density "
                     f"{lesion['target_density']:g}; MAISI drew {lesion['rendered_mean_hu']:g} HU)")
    if record.get("effusion"):
        e = record["effusion"]
        notes.append(f"pleural effusion composed (MAISI has no effusion label): {e['voxels']} voxels painted at "
                     f"{e['target_hu']:g} HU with the image's noise ({e['image_noise_hu']:g} HU)")
    if record.get("emphysema"):
        e = record["emphysema"]
        notes.append(f"emphysema composed (MAISI has no emphysema label): lung below -950 HU "
                     f"{100 * e['lung_below_950_before']:.1f}% -> {100 * e['lung_below_950_after']:.1f}%")
    return notes
