"""``medgen read``: report text -> findings JSON, with the learned report reader.

    medgen read --report "RUL: 12 mm solid nodule. No effusion." [--reader DIR] [--out findings.json] [--details]

Prints the findings JSON (schema in `medgen.findings`); warnings (nothing recognised, unknown script,
a lesion without a lobe or size) go to stderr as ``medgen: warning: ...`` lines and into the JSON with
``--details``, which also lists the tagged spans.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medgen.errors import ModelNotFoundError
from medgen.pipelines.validation import check_report, read_report_file


def register(subparsers) -> None:
    p = subparsers.add_parser("read", help="read a report into typed findings (JSON)",
                              description="Read a free-text EN/ZH chest CT report into typed findings (JSON).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--report", metavar="TEXT", help="the report text")
    src.add_argument("--report-file", metavar="FILE", type=Path, help="UTF-8 text file holding the report")
    p.add_argument("--reader", metavar="DIR", type=Path,
                   help="reader folder (ReportReader.save_pretrained, or a pipeline folder with reader/); "
                        "default: the embedded default model's reader")
    p.add_argument("--out", metavar="FILE.json", type=Path, help="also write the JSON here")
    p.add_argument("--details", action="store_true", help="print findings, warnings and tagged spans")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def resolve_reader_path(path: Path | None) -> Path:
    """A reader folder: `path` itself, `path/reader` for a pipeline folder, or the default model's reader."""
    from medgen.pipelines.default_model import resolve_model_path

    try:
        folder = resolve_model_path(path)
    except ModelNotFoundError:
        raise ModelNotFoundError("the default model is not installed, so there is no default reader; pass "
                                 "--reader DIR (a folder written by ReportReader.save_pretrained)") from None
    if (folder / "reader").is_dir():
        return folder / "reader"
    if path is None:
        raise ModelNotFoundError(f"the default model has no report reader (looked for {folder / 'reader'}); "
                                 "train one with `medgen train reader --out DIR` and pass --reader DIR")
    return folder


def run(args) -> int:
    from medgen.io.atomic import atomic_path, check_output_path
    from medgen.io.weights import quiet_transformers
    from medgen.reader import ReportReader

    text = read_report_file(args.report_file) if args.report_file else check_report(args.report)
    if args.out is not None:
        check_output_path(args.out, overwrite=args.overwrite)
    with quiet_transformers():
        reader = ReportReader.from_pretrained(resolve_reader_path(args.reader))
    result = reader.read(text)
    for message in result.warnings:
        print(f"medgen: warning: {message}", file=sys.stderr)
    payload = result.to_dict() if args.details else result.findings.to_dict()
    output = json.dumps(payload, indent=2, ensure_ascii=False)
    if args.out is not None:
        with atomic_path(args.out, overwrite=args.overwrite) as tmp:
            Path(tmp).write_text(output + "\n", encoding="utf-8")
    print(output)
    return 0
