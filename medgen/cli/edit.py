"""`medgen edit`: add the findings a report describes to an existing CT, change nothing else.

    medgen edit --ct in.nii.gz --report "A 25 mm solid nodule in the right lower lobe." --out out.nii.gz \\
        --model runs/phantom-64-layout/pipeline

Edits compose: the output's ``_labels.nii.gz`` and ``_findings.json`` are picked up when it is edited again,
which is also what `--remove N` and `--set-density N=D` need. Every input and output is checked before the
model is loaded; a bad one prints one ``medgen: error:`` line and exits 2, leaving no file behind.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from medgen.edit import EditPipeline
from medgen.errors import InputFileError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "edit", help="add findings to an existing CT (or remove one), changing nothing else",
        description="Add the findings a report describes to an existing chest CT, regenerating only a margin "
                    "around them (layout-grounded models).")
    p.add_argument("--ct", metavar="CT", type=Path, required=True, help="the CT: NIfTI file or DICOM series folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--report", metavar="TEXT", help="report text describing what to add")
    src.add_argument("--report-file", metavar="FILE", type=Path, help="UTF-8 text file holding that report")
    src.add_argument("--findings", metavar="F.json", type=Path, help="findings JSON of what to add")
    p.add_argument("--labels", metavar="LABELS.nii.gz", type=Path,
                   help="the CT's label map (default: CT_labels.nii.gz beside a medgen-made CT, if there)")
    p.add_argument("--prior-findings", metavar="F.json", type=Path,
                   help="the CT's findings (default: CT_findings.json beside a medgen-made CT, if there)")
    p.add_argument("--remove", type=int, nargs="+", metavar="N", default=[],
                   help="take out lesion N of the CT's findings (needs its label map)")
    p.add_argument("--set-density", nargs="+", metavar="N=D", default=[],
                   help="give lesion N of the CT's findings density D in [0, 1] (needs its label map)")
    p.add_argument("--out", metavar="OUT.nii.gz", type=Path, required=True, help="output NIfTI")
    p.add_argument("--model", metavar="DIR", type=Path, help="layout-grounded pipeline folder (default: the embedded model)")
    p.add_argument("--margin-mm", type=float, default=None, help="regenerated margin around the change (default 15)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="placement and noise seed (default 0)")
    p.add_argument("--no-hu-calibration", action="store_true",
                   help="keep the renderer's lesion/fluid HU as decoded (default: each moved to its target mean)")
    p.add_argument("--steps", type=int, metavar="K", help="sampler steps (default: the model's)")
    p.add_argument("--guidance", type=float, metavar="W", help="text guidance weight (default: the model's)")
    p.add_argument("--dicom-out", metavar="DIR", type=Path, help="also write a DICOM series (and SEG) here")
    p.add_argument("--no-preview", action="store_true", help="do not write the PNG preview")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.cli.generate import _read_findings
    from medgen.edit import DEFAULT_MARGIN_MM
    from medgen.edit.place import check_edit_numbers
    from medgen.io import load_nifti, load_volume
    from medgen.pipelines.default_model import resolve_model_path
    from medgen.pipelines.result import findings_path, labels_path, plan_outputs
    from medgen.pipelines.validation import (
        check_ct_hu,
        check_device,
        check_guidance,
        check_label_map,
        check_margin_mm,
        check_report,
        check_seed,
        check_steps,
        read_report_file,
    )
    from medgen.volume import check_density

    # 1. Check every input and output before loading the model.
    if not args.ct.exists():
        raise InputFileError(args.ct, "CT not found")
    if args.report_file is not None:
        report = read_report_file(args.report_file)
    else:
        report = None if args.report is None else check_report(args.report)
    findings = _read_findings(args.findings) if args.findings is not None else None
    densities = _parse_densities(args.set_density, check_density)
    if report is None and findings is None and not args.remove and not densities:
        raise ValueError("give what to add (--report, --report-file or --findings), or --remove / --set-density")
    check_edit_numbers(args.remove, densities)
    check_seed(args.seed)
    margin_mm = check_margin_mm(DEFAULT_MARGIN_MM if args.margin_mm is None else args.margin_mm, "margin-mm")
    if args.steps is not None:
        check_steps(args.steps, "steps")
    if args.guidance is not None:
        check_guidance(args.guidance, "guidance")
    labels_file = args.labels or _beside(args.ct, labels_path)
    prior_file = args.prior_findings or _beside(args.ct, findings_path)
    if labels_file is not None and not labels_file.is_file():
        raise InputFileError(labels_file, "label map not found")
    plan_outputs(args.out, dicom_dir=args.dicom_out, preview=not args.no_preview, overwrite=args.overwrite,
                 labels=True, findings=True)
    volume = load_volume(args.ct, canonical=False)  # the output keeps the input's grid
    check_ct_hu(volume.array, args.ct)
    labels = load_nifti(labels_file) if labels_file is not None else None
    if labels is not None:
        check_label_map(labels.array, labels_file)
    prior = _read_findings(prior_file) if prior_file is not None else None
    device = check_device(args.device)
    model_dir = resolve_model_path(args.model)

    # 2. Load the model, edit, write.
    from medgen.edit import source_sha256
    from medgen.pipelines.layout_stage import LayoutWarning
    from medgen.pipelines.text_to_volume import ReportToVolumePipeline
    from medgen.reader import ReaderWarning

    pipe = ReportToVolumePipeline.from_pretrained(model_dir, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)
        warnings.simplefilter("ignore", LayoutWarning)
        result = EditPipeline.from_pipe(pipe)(volume, report=report, findings=findings, labels=labels, prior=prior,
                           remove=args.remove, densities=densities, seed=args.seed, num_inference_steps=args.steps,
                           guidance_scale=args.guidance, hu_calibration=not args.no_hu_calibration,
                           margin_mm=margin_mm,
                           source={"sha256": source_sha256(args.ct), "name": args.ct.name})
    for message in result.provenance["layout"]["warnings"]:
        print(f"medgen: warning: {args.out.name}: {message}", file=sys.stderr)
    written = result.save(args.out, dicom_dir=args.dicom_out, preview=not args.no_preview, overwrite=args.overwrite)
    print("\n".join(str(path) for path in written.values()))
    return 0


def _beside(ct: Path, naming) -> Path | None:
    """The medgen output file named by `naming` beside a NIfTI CT, if it exists."""
    if ct.is_dir() or not ct.name.endswith((".nii", ".nii.gz")):
        return None
    candidate = naming(ct)
    return candidate if candidate.is_file() else None


def _parse_densities(items: list[str], check) -> dict[int, float]:
    out = {}
    for item in items:
        number, _, value = item.partition("=")
        try:
            out[int(number)] = check(float(value))
        except ValueError:
            raise ValueError(f"--set-density takes N=D with D in [0, 1], got {item!r}") from None
    return out
