"""``medgen data``: build the synthetic training set, or write one phantom (the quickstart demo).

    medgen data synth --n 2000 --shape 64 --spacing 5 --out data/phantom-64 [--seed 0] [--dicom-fraction 0.1]
    medgen data phantom --out volumes/phantom.nii.gz [--seed 0] [--shape 64] [--spacing 5] [--language en] [--version 2]
    medgen data layouts --manifest data/phantom-64/manifest.jsonl [--shape 64] [--spacing 5] [--workers 2]
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="synthetic phantom data (training set, single demo phantom)")
    sub = parser.add_subparsers(dest="data_command", required=True)

    synth = sub.add_parser("synth", help="build a synthetic dataset folder with manifest.jsonl")
    synth.add_argument("--n", type=int, required=True, help="number of subjects")
    synth.add_argument("--out", type=Path, required=True, help="output folder (must be new or empty)")
    synth.add_argument("--shape", type=int, default=64, help="voxels per side (default 64)")
    synth.add_argument("--spacing", type=float, default=5.0, help="voxel size in mm (default 5)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    synth.add_argument("--dicom-fraction", type=float, default=0.0, help="share written as DICOM series")
    synth.add_argument("--zh-fraction", type=float, default=0.4, help="share of Chinese reports (default 0.4)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.add_argument("--phantom-version", type=int, choices=(1, 2), default=1,
                       help="1 (default) or 2 (adult anatomy; each subject also gets its exact layout)")
    synth.set_defaults(func=run_synth)

    phantom = sub.add_parser("phantom", help="write one phantom CT + label map + report + PNG preview")
    phantom.add_argument("--out", type=Path, required=True, help="output image, .nii.gz")
    phantom.add_argument("--seed", type=int, default=0, help="seed for findings, anatomy and report")
    phantom.add_argument("--shape", type=int, default=64, help="voxels per side (default 64)")
    phantom.add_argument("--spacing", type=float, default=5.0, help="voxel size in mm (default 5)")
    phantom.add_argument("--language", choices=("en", "zh"), default="en", help="report language")
    phantom.add_argument("--version", type=int, choices=(1, 2), default=1,
                         help="phantom version: 1 (default, medgen labels) or 2 (adult anatomy, MAISI label ids)")
    phantom.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    phantom.set_defaults(func=run_phantom)

    layouts = sub.add_parser("layouts", help="write each phantom subject's layout label map (for layout models)")
    layouts.add_argument("--manifest", type=Path, required=True, help="manifest.jsonl of a `medgen data synth` set")
    layouts.add_argument("--shape", type=int, default=64, help="voxels per side the set was built with (default 64)")
    layouts.add_argument("--spacing", type=float, default=5.0, help="voxel size in mm of the set (default 5)")
    layouts.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    layouts.add_argument("--quiet", action="store_true", help="no progress bar")
    layouts.set_defaults(func=run_layouts)


def run_layouts(args) -> int:
    from medgen.dataset.layouts import add_layouts

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    manifest = add_layouts(args.manifest, shape=args.shape, spacing=args.spacing, workers=args.workers,
                           progress=not args.quiet)
    print(f"wrote layouts; manifest: {manifest}")
    return 0


def run_synth(args) -> int:
    from medgen.dataset.builder import build_synthetic_dataset

    manifest = build_synthetic_dataset(
        args.out, n=args.n, shape=args.shape, spacing=args.spacing, seed=args.seed,
        dicom_fraction=args.dicom_fraction, zh_fraction=args.zh_fraction, workers=args.workers,
        progress=not args.quiet, overwrite=args.overwrite, phantom_version=args.phantom_version,
    )
    print(f"wrote {args.n} subjects; manifest: {manifest}")
    return 0


def _stem(path: Path) -> Path:
    """``x.nii.gz`` -> ``x`` (siblings are named from it)."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    raise ValueError(f"`--out` must end in .nii.gz or .nii, got {path.name!r}")


def run_phantom(args) -> int:
    import numpy as np

    from medgen.dataset.builder import LABEL_DESCRIP, synthesize_subject
    from medgen.io import save_nifti
    from medgen.io.atomic import atomic_path, check_output_path
    from medgen.io.png import render_orthogonal

    stem = _stem(args.out)
    outputs = {"image": args.out, "label": stem.with_name(stem.name + "_label.nii.gz"),
               "report": stem.with_suffix(".txt"), "preview": stem.with_suffix(".png")}
    for path in outputs.values():  # fail before any work
        check_output_path(path, args.overwrite)

    if args.version == 2:
        from medgen.phantom.v2.phantom import demo_subject

        case, report, sidecar = demo_subject(args.seed, shape=args.shape, spacing=args.spacing, language=args.language)
        descrip = "SYNTHETIC medgen phantom v2 labels (MAISI ids)"
    else:
        subject = synthesize_subject(np.random.default_rng(args.seed), shape=args.shape, spacing=args.spacing,
                                     language=args.language, p_normal=0.0)  # the demo should show something
        case, report, sidecar, descrip = subject.case, subject.report, subject.provenance(seed=args.seed), LABEL_DESCRIP
    save_nifti(case.image, outputs["image"], sidecar=sidecar, overwrite=args.overwrite)
    save_nifti(case.labels, outputs["label"], dtype=np.uint8, descrip=descrip, overwrite=args.overwrite)
    with atomic_path(outputs["report"], overwrite=args.overwrite) as tmp:
        tmp.write_text(report.text + "\n", encoding="utf-8")
    lesion = case.findings.lesions[0] if case.findings.lesions else None
    title = f"phantom seed {args.seed}"
    if lesion is not None:
        title += f" (through the {lesion.lobe.replace('_', ' ')} lobe lesion)"
    render_orthogonal(case.image, outputs["preview"], center_mm=lesion.center_mm if lesion else None, title=title,
                      overwrite=args.overwrite)

    print(report.text)
    print(f"\n{case.image}")
    for name, path in outputs.items():
        print(f"{name:>8}: {path}")
    return 0
