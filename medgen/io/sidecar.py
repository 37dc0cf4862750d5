"""JSON provenance sidecars: ``x.nii.gz`` -> ``x.json``; a DICOM series folder -> ``folder/provenance.json``."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medgen.errors import InputFileError
from medgen.io.atomic import atomic_path

# Suffixes stripped (longest first) before ".json" is added.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", ".dcm", ".mha", ".nrrd")
FOLDER_SIDECAR_NAME = "provenance.json"


def sidecar_path(image_path) -> Path:
    """Where the sidecar of `image_path` lives.

    ``x.nii.gz`` / ``x.nii`` / ``x.png`` -> ``x.json``; an existing folder, or a path without a suffix
    (a DICOM series folder about to be written) -> ``folder/provenance.json``.
    """
    path = Path(image_path)
    if path.is_dir() or not path.suffix:
        return path / FOLDER_SIDECAR_NAME
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def to_json_value(value):
    """`json.dump` fallback for numpy scalars/arrays, paths, sets and dataclasses."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"sidecar value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def write_sidecar(image_path, data: dict) -> Path:
    """Write `data` as pretty UTF-8 JSON beside `image_path` (atomically); returns the sidecar path."""
    if not isinstance(data, dict):
        raise TypeError(f"`data` must be a dict, got {type(data).__name__}")
    path = sidecar_path(image_path)
    text = json.dumps(data, indent=2, ensure_ascii=False, default=to_json_value) + "\n"
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def read_json_object(path, *, missing: str = "file not found") -> dict:
    """A JSON object from `path`; InputFileError (naming the file) if missing, corrupt or not an object."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, missing)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(path, f"corrupt JSON ({err})") from None
    except RecursionError:  # json recurses once per nesting level
        raise InputFileError(path, "corrupt JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise InputFileError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def read_sidecar(image_path) -> dict:
    """Read the sidecar of `image_path` (InputFileError if it is missing or not a JSON object)."""
    return read_json_object(sidecar_path(image_path), missing="sidecar JSON not found")


def provenance(**fields) -> dict:
    """Provenance record: ``synthetic: True``, the medgen version and UTC creation time, then `fields`."""
    from medgen._version import __version__

    record = {
        "synthetic": True,
        "medgen_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(fields)
    record["synthetic"] = True  # a caller cannot un-label synthetic output
    return record
