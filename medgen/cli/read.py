"""``medgen read``: report text -> findings JSON, with the learned report reader.

    medgen read --report "RUL: 12 mm solid nodule. No effusion." [--reader DIR] [--out findings.json]
                [--details | --explain]

Prints the findings JSON (schema in `medgen.findings`); warnings (nothing recognised, not English or Chinese,
no chest words, a lesion without a lobe or size) go to stderr as ``medgen: warning: ...`` lines and into the JSON
with ``--details``, which also gives per finding its certainty, the cue that set it and the words it was read from
(`explain`), what the tagger read that was not used (`disagreements`) and every tagged span. ``--explain`` prints
the same as plain text instead of JSON (``--out`` still writes the JSON).
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
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--details", action="store_true",
                       help="print findings, warnings, where each finding came from, and the tagged spans (JSON)")
    shown.add_argument("--explain", action="store_true",
                       help="print each finding with its certainty and the words it was read from (plain text)")
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
    print("\n".join(explain_lines(result)) if args.explain else output)
    return 0


def _value(finding: dict) -> str:
    value = finding["value"]
    if finding["finding"].startswith("lesion"):
        return f"{value['lobe']}, {value['diameter_mm']:g} mm, {value['type']}, {value['margin']}"
    return ", ".join(str(value[k]) for k in ("side", "grade", "distribution") if k in value)


def explain_lines(result) -> list[str]:
    """Plain-text explanation of a `ReadResult`: each finding, its certainty and cue, and its words."""
    lines = [f"language: {result.language or 'not recognised'}"]
    if result.findings.is_normal:
        lines.append("no findings (normal study)")
    for finding in result.details:
        cues = "; ".join(f"{category.lower().replace('_', ' ')}: {words!r}" for category, words in
                         finding["cues"].items())
        lines.append(f"{finding['finding']}: {_value(finding)}; {finding['certainty']}"
                     + (f" (cue {cues})" if cues else "") + f"; read by {finding['read_by']}")
        for word in finding["words"]:
            lines.append(f"    {word['text']!r} -> {word['group']}={word['value']} [{word['source']}]")
    for item in result.disagreements:
        if item.get("read_by") == "tagger":
            lines.append(f"not used: the tagger alone read a {item['finding']} from {item['words']}")
    lines += [f"warning: {w}" for w in result.warnings]
    return lines
