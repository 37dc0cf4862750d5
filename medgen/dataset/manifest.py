"""The dataset manifest: one JSON object per line (``manifest.jsonl``), one line per subject.

A row::

    {"id": "case00000",
     "image": "images/case00000.nii.gz",      # NIfTI file or DICOM series folder
     "label": "labels/case00000.nii.gz",      # label-map NIfTI (values: medgen.findings.LABELS) or null
     "report": "...", "language": "en",       # "en" | "zh"
     "density": 0.42, "density_source": "mask",   # d in [0, 1] or null; "mask" | "words" | "unknown"
     "findings": {...},                       # Findings.to_dict()
     "split": "train",                        # "train" | "val" | "test"
     "phrasing": "en-structured",             # report phrasing family
     "format": "nifti",                       # "nifti" | "dicom"
     "seed": 1234}                            # extra keys (here: the builder's phantom seed) pass through

Paths are stored relative to the manifest's folder when they lie inside it (so a dataset folder
can be moved) and are returned absolute by `read_manifest`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from medgen.errors import InputFileError
from medgen.io.atomic import atomic_path

REQUIRED_KEYS = ("id", "image", "report", "language", "split")
PATH_KEYS = ("image", "label", "layout")
LANGUAGES = ("en", "zh")
SPLITS = ("train", "val", "test")
DENSITY_SOURCES = ("mask", "words", "unknown")


def _check_row(row, where: str) -> None:
    """Raise ValueError (message starts with `where`) if a row breaks the schema."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in row]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {missing} (required: {list(REQUIRED_KEYS)})")
    if row["language"] not in LANGUAGES:
        raise ValueError(f"{where}: `language` must be one of {LANGUAGES}, got {row['language']!r}")
    if row["split"] not in SPLITS:
        raise ValueError(f"{where}: `split` must be one of {SPLITS}, got {row['split']!r}")
    density = row.get("density")
    if density is not None:
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not (
            math.isfinite(density) and 0.0 <= density <= 1.0
        ):
            raise ValueError(f"{where}: `density` must be a number in [0, 1] or null, got {density!r}")
    source = row.get("density_source")
    if source is not None and source not in DENSITY_SOURCES:
        raise ValueError(f"{where}: `density_source` must be one of {DENSITY_SOURCES}, got {source!r}")


def read_manifest(path) -> list[dict]:
    """Read a ``.jsonl`` manifest; `image` / `label` paths come back absolute.

    Raises:
        InputFileError: the file is missing, a line is not JSON, or a row misses a required key
            (the message names the file and the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "manifest not found")
    root = path.resolve().parent
    rows, ids = [], set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputFileError(path, f"line {number}: invalid JSON ({err.msg} at column {err.colno})") from None
            try:
                _check_row(row, f"line {number}")
            except ValueError as err:
                raise InputFileError(path, str(err)) from None
            if row["id"] in ids:
                raise InputFileError(path, f"line {number}: duplicate id {row['id']!r}")
            ids.add(row["id"])
            for key in PATH_KEYS:
                if row.get(key) is not None:
                    row[key] = str(root / row[key])  # an absolute row[key] stays as it is
            rows.append(row)
    return rows


def _relative(value, root: Path):
    """`value` relative to `root` when it lies inside it (manifests stay valid when the folder moves)."""
    if value is None or not Path(value).is_absolute():
        return None if value is None else Path(value).as_posix()
    resolved = Path(value).resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(value)


def write_manifest(path, rows) -> Path:
    """Validate `rows` and write them as ``.jsonl`` atomically (paths inside the folder made relative)."""
    path = Path(path)
    root = path.parent.resolve()
    lines = []
    for index, row in enumerate(rows):
        _check_row(row, f"row {index}")
        row = dict(row)
        for key in PATH_KEYS:
            if key in row:
                row[key] = _relative(row[key], root)
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=False))
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
