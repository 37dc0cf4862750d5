"""`medgen generate`: report text -> NIfTI (+ sidecar JSON, PNG preview, optional DICOM series).

Single report::

    medgen generate --report "A 12 mm solid nodule in the right upper lobe." --out volumes/x.nii.gz

Batch (one JSON object a line: ``id``, ``report`` or ``text``, optional ``density`` and ``seed``), in one
process or spread over processes, GPUs and nodes by ``torchrun`` (see `BATCH_EPILOG` and
`medgen.pipelines.batch`)::

    medgen generate --manifest reports.jsonl --out-dir volumes/batch
    torchrun --nproc_per_node 4 -m medgen.cli.main generate --manifest reports.jsonl --out-dir volumes/batch --device cuda

Every input and output is checked before the model is loaded; a bad one prints a single
``medgen: error: ...`` line and exits with status 2, leaving no file behind.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from medgen.errors import InputFileError
from medgen.pipelines.validation import check_report, check_seed, read_report_file
from medgen.volume import check_density

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class Job:
    """One volume to generate: report, density, seed and where it goes."""

    report: str
    density: float | None
    seed: int
    out: Path
    dicom_dir: Path | None
    row_id: str = ""  # batch: the manifest row's "id"


BATCH_EPILOG = """\
batch (--manifest): every file of every row is checked before the model loads (two rows writing one
file, an unwritable folder, earlier output). A row whose files all exist is skipped, so rerunning the
same command resumes after a crash or preemption; a row with only some of its files is refused.
--overwrite regenerates every row. Each row ends as a line of OUT_DIR/results.jsonl (id, status
ok/skipped/failed, error, seconds, rank); a failing row does not stop the others. Exit status: 0 all
rows written or skipped, 1 some row failed, 2 bad input (nothing generated).

spread the rows over processes with torchrun (each takes every WORLD_SIZE-th row left to do):
  one node, 4 GPUs:
    torchrun --nproc_per_node 4 -m medgen.cli.main generate --manifest M --out-dir D --device cuda
  SLURM, many nodes (one srun task a node):
    srun torchrun --nnodes $SLURM_NNODES --nproc_per_node 4 --rdzv_backend c10d \\
      --rdzv_endpoint $HOST:29500 -m medgen.cli.main generate --manifest M --out-dir D --device cuda
  CPU only: torchrun --nproc_per_node 2 -m medgen.cli.main generate --manifest M --out-dir D
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate synthetic CT volume(s) from report text",
        description="Generate a synthetic chest CT (NIfTI, HU, RAS+) from a radiology report.",
        epilog=BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=False)
    src.add_argument("--report", metavar="TEXT", help="the report text")
    src.add_argument("--report-file", metavar="FILE", type=Path, help="UTF-8 text file holding the report")
    src.add_argument("--manifest", metavar="JSONL", type=Path,
                     help='batch: one JSON object a line with "id", "report" (or "text"), optional "density", "seed"')
    p.add_argument("--findings", metavar="F.json", type=Path,
                   help="findings JSON (e.g. edited `medgen read` output) to generate instead of what the reader "
                        "reads; no report text needed (layout-grounded models)")
    p.add_argument("--layout", metavar="LABELS.nii.gz", type=Path,
                   help="your own label map on the output grid to render (mask-to-CT; layout-grounded models)")
    p.add_argument("--out", metavar="OUT.nii.gz", type=Path, help="output NIfTI (single report)")
    p.add_argument("--out-dir", metavar="DIR", type=Path, help="output folder (batch): DIR/<id>.nii.gz, .json, .png")
    p.add_argument("--density", type=float, metavar="D", help="lesion density in [0, 1] (default: implied by the report)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="noise seed (default 0; in batch mode a row without a seed gets SEED + row index)")
    p.add_argument("--steps", type=int, metavar="K", help="sampler steps (default: the model's)")
    p.add_argument("--guidance", type=float, metavar="W", help="text guidance weight (default: the model's; 1 = off)")
    p.add_argument("--density-guidance", type=float, metavar="W", help="density guidance weight (default: the model's; 1 = off)")
    p.add_argument("--model", metavar="DIR", type=Path,
                   help="pipeline folder (ReportToVolumePipeline.save_pretrained); default: the embedded model")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="output voxels over the model's field of view (spacing = FOV / shape): its native grid (the "
                        "default) or 2, 4, 8 times it through the resolution cascade")
    p.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                   help="output spacing in mm (one value or three), instead of --shape (shape = FOV / spacing)")
    p.add_argument("--fov", type=float, nargs="+", metavar="MM",
                   help="field of view in mm (one value or three); must be the model's, checked before any work")
    p.add_argument("--dicom-out", metavar="DIR", type=Path,
                   help="also write a DICOM series here (batch: DIR/<id>/)")
    p.add_argument("--no-preview", action="store_true", help="do not write the PNG preview")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (batch: regenerate every row; without it complete rows are skipped)")
    from medgen.cli.generate_maisi import add_maisi_arguments

    add_maisi_arguments(p)  # --renderer embedded|maisi, --maisi DIR, --anatomy SEG, --anatomy-ids
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from medgen.pipelines.components import model_outputs
    from medgen.pipelines.default_model import resolve_model_path
    from medgen.pipelines.result import plan_outputs
    from medgen.pipelines.validation import check_device, check_guidance, check_steps

    if getattr(args, "renderer", "embedded") == "maisi" or args.maisi is not None or args.anatomy is not None:
        from medgen.cli.generate_maisi import run_maisi

        return run_maisi(args)
    # 1. Check every input and output before loading anything.
    if args.manifest is None and args.report is None and args.report_file is None and args.findings is None:
        raise ValueError("give --report, --report-file, --findings or --manifest")
    if args.manifest is not None and (args.findings is not None or args.layout is not None):
        raise ValueError("--findings / --layout go with a single volume, not --manifest")
    findings = _read_findings(args.findings) if args.findings is not None else None
    layout = _read_layout(args.layout) if args.layout is not None else None
    jobs = _manifest_jobs(args) if args.manifest is not None else [_single_job(args)]
    if args.steps is not None:
        check_steps(args.steps, "steps")
    for value, name in ((args.guidance, "guidance"), (args.density_guidance, "density-guidance")):
        if value is not None:
            check_guidance(value, name)
    device = check_device(args.device)
    model_dir = resolve_model_path(args.model)
    if args.manifest is None:  # a batch plans its rows itself (complete rows are skipped, not refused)
        # the model's folder says whether a label map and a findings file are written too
        plan_outputs(jobs[0].out, dicom_dir=jobs[0].dicom_dir, preview=not args.no_preview, overwrite=args.overwrite,
                     **model_outputs(model_dir))
    _check_grid_request(model_dir, args)  # from model_index.json alone: before any weights are loaded
    if args.manifest is not None:
        from medgen.pipelines.batch import run_batch

        return run_batch(jobs, manifest=args.manifest, out_dir=args.out_dir, model_dir=model_dir, device=device,
                         options=_options(args), preview=not args.no_preview, overwrite=args.overwrite)

    # 2. Load the model and check the model-dependent inputs (shape, steps) before generating.
    from medgen.pipelines.layout_stage import LayoutWarning
    from medgen.pipelines.text_to_volume import ReportToVolumePipeline
    from medgen.reader import ReaderWarning

    pipe = ReportToVolumePipeline.from_pretrained(model_dir, device=device)
    options = _options(args)
    job = jobs[0]
    pipe.check_inputs(job.report, findings=findings, layout=layout, **options)

    # 3. Generate and write.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReaderWarning)  # printed below as medgen: warning lines
        warnings.simplefilter("ignore", LayoutWarning)
        result = pipe(job.report, findings=findings, layout=layout, density=job.density, seed=job.seed,
                      progress=True, **options)
    layout_warnings = result.provenance.get("layout", {}).get("warnings", [])
    for message in [*result.provenance.get("reader_warnings", []), *layout_warnings]:
        print(f"medgen: warning: {job.out.name}: {message}", file=sys.stderr)
    written = result.save(job.out, dicom_dir=job.dicom_dir, preview=not args.no_preview, overwrite=args.overwrite)
    print("\n".join(str(path) for path in written.values()))
    return 0


def _options(args) -> dict:
    """The sampling options of `ReportToVolumePipeline.__call__` given on the command line."""
    return dict(
        shape=tuple(args.shape) if args.shape else None,
        spacing=_one_or_three(args.spacing, "--spacing"),
        fov=_one_or_three(args.fov, "--fov"),
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        density_guidance_scale=args.density_guidance,
    )


def _check_grid_request(model_dir: Path, args) -> None:
    """Refuse a shape / spacing / FOV the model cannot honour from its model_index.json (no weights read)."""
    from medgen.io.weights import INDEX_NAME, read_json
    from medgen.pipelines.text_to_volume import CONFIG_DEFAULTS
    from medgen.refine import plan_grid

    index = model_dir / INDEX_NAME
    config = read_json(index).get("config") or {} if index.is_file() else {}
    if not isinstance(config, dict):
        return  # a corrupt index is reported by the loader with its file name
    plan_grid(config.get("shape", CONFIG_DEFAULTS["shape"]), config.get("spacing", CONFIG_DEFAULTS["spacing"]),
              shape=tuple(args.shape) if args.shape else None, spacing=_one_or_three(args.spacing, "--spacing"),
              fov=_one_or_three(args.fov, "--fov"))


def _one_or_three(values, flag: str):
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise ValueError(f"{flag} takes one value or three (X Y Z), got {len(values)}")
    return values[0] if len(values) == 1 else tuple(values)


def _read_findings(path: Path):
    from medgen.findings import Findings, FindingsError
    from medgen.pipelines.validation import check_lesion_count

    if not path.is_file():
        raise InputFileError(path, "findings file not found" if not path.exists() else "not a regular file")
    try:
        findings = Findings.from_json(path.read_text(encoding="utf-8"))
    except (FindingsError, UnicodeDecodeError) as err:
        raise InputFileError(path, str(err)) from None
    return check_lesion_count(findings, path)


def _read_layout(path: Path):
    from medgen.io import load_nifti

    if not path.is_file():
        raise InputFileError(path, "layout file not found" if not path.exists() else "not a regular file")
    volume = load_nifti(path)
    volume.meta["path"] = str(path)
    return volume


def _single_job(args) -> Job:
    if args.out is None:
        raise ValueError("--out OUT.nii.gz is required with --report / --report-file / --findings")
    if args.out_dir is not None:
        raise ValueError("--out-dir is for --manifest; use --out with a single report")
    if args.report_file is not None:
        report = read_report_file(args.report_file)
    else:
        report = None if args.report is None else check_report(args.report)
    return Job(report, check_density(args.density), check_seed(args.seed), args.out, args.dicom_out)


def _manifest_jobs(args) -> list[Job]:
    """Parse and check the whole manifest (every row) before any generation."""
    if args.out_dir is None:
        raise ValueError("--out-dir DIR is required with --manifest")
    if args.out is not None:
        raise ValueError("--out is for a single report; use --out-dir with --manifest")
    if args.density is not None:
        raise ValueError("--density applies to a single report; give a \"density\" per manifest row")
    path = args.manifest
    if not path.is_file():
        raise InputFileError(path, "manifest not found" if not path.exists() else "not a regular file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise InputFileError(path, "not valid UTF-8 text (expected JSON lines)") from None
    jobs, seen = [], set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            jobs.append(_manifest_row(line, len(jobs), args, seen))
        except (ValueError, TypeError) as err:
            raise InputFileError(path, f"line {lineno}: {err}") from None
    if not jobs:
        raise InputFileError(path, "manifest has no rows")
    return jobs


def _manifest_row(line: str, index: int, args, seen: set) -> Job:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    row_id = str(row.get("id", ""))
    if not _SAFE_ID.match(row_id):
        raise ValueError(f'"id" must be 1-128 letters, digits, ".", "_" or "-" (a file name), got {row_id!r}')
    if row_id in seen:
        raise ValueError(f'duplicate "id" {row_id!r}')
    seen.add(row_id)
    if ("report" in row) == ("text" in row):
        raise ValueError('give exactly one of "report" or "text"')
    report = check_report(row.get("report", row.get("text")))
    seed = check_seed(row["seed"]) if "seed" in row else check_seed(args.seed + index)
    dicom_dir = args.dicom_out / row_id if args.dicom_out is not None else None
    return Job(report, check_density(row.get("density")), seed, args.out_dir / f"{row_id}.nii.gz", dicom_dir,
               row_id)
