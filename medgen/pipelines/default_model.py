"""Where the embedded default model lives: `medgen/assets/default-model/` inside the installed package."""

from __future__ import annotations

from pathlib import Path

from medgen.errors import ModelNotFoundError

DEFAULT_MODEL_ID = "medgen-default"  # how provenance names the embedded model (never by its install path)


def default_model_path() -> Path:
    """Folder of the default pipeline shipped with the package (it may not be installed)."""
    return Path(__file__).resolve().parent.parent / "assets" / "default-model"


def resolve_model_path(model=None) -> Path:
    """`model` as a Path, or the default model's folder when `model` is None.

    Raises:
        ModelNotFoundError: `model` is None and the default model is not installed.
    """
    if model is not None:
        return Path(model)
    path = default_model_path()
    if not (path / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"the default model is not installed (looked for {path / 'model_index.json'}); "
            "pass --model DIR (Python: ReportToVolumePipeline.from_pretrained(DIR)) with a folder "
            "written by ReportToVolumePipeline.save_pretrained"
        )
    return path


def is_default_model(path) -> bool:
    """True when `path` is the embedded default model's folder."""
    try:
        return Path(path).resolve() == default_model_path()
    except OSError:
        return False
