"""The folder layout of a saved `ReportToVolumePipeline`: which component lives where, which folders must
hold safetensors, and the optional components (reader, anatomy bank, refiner stages).

    model_index.json                    class name, medgen version, component classes, pipeline config,
                                        sha256 of every weight file
    text_encoder/                       TextEncoder.save_pretrained (HF config + model.safetensors + tokenizer)
    autoencoder/config.json, model.safetensors
    unet/config.json, model.safetensors
    scheduler/scheduler_config.json
    reader/, anatomy_bank/, refiner/stage_<k>/   optional
"""

from __future__ import annotations

from pathlib import Path

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.io import weights as storage
from medgen.io.weights import (
    CONFIG_NAME,
    INDEX_NAME,
    check_safetensors_only,
    quiet_transformers,
    read_json,
    sha256_file,
)

COMPONENTS = ("text_encoder", "autoencoder", "unet", "scheduler")

def check_pipeline_folder(path: Path) -> dict:
    """Check that `path` is a complete pipeline folder; returns the parsed ``model_index.json``."""
    if not path.exists():
        raise ModelNotFoundError(f"model folder {path} not found")
    if not path.is_dir():
        raise InputFileError(path, "not a folder (expected a pipeline folder written by save_pretrained)")
    index = read_json_or_missing(path / INDEX_NAME, "not a medgen pipeline folder: no model_index.json")
    if index.get("_class_name") != "ReportToVolumePipeline":
        raise InputFileError(path / INDEX_NAME, f"not a ReportToVolumePipeline (class {index.get('_class_name')!r})")
    for name in COMPONENTS:
        if not (path / name).is_dir():
            raise ModelNotFoundError(f"model folder {path} is incomplete: component folder {name}/ is missing")
    for folder in weight_folders(path):
        check_safetensors_only(folder)
    return index


def model_outputs(path: Path) -> dict[str, bool]:
    """What a model writes beside each CT, from its folder alone (before any weights load): ``labels`` (a
    layout-grounded UNet: the label map) and ``findings`` (those, or a report reader: the findings JSON)."""
    unet_config = path / "unet" / CONFIG_NAME
    try:
        grounded = bool(read_json(unet_config).get("layout_channels", 0)) if unet_config.is_file() else False
    except InputFileError:
        grounded = False  # a corrupt config is reported by the loader with its file name
    return {"labels": grounded, "findings": grounded or (path / "reader").is_dir()}


def read_json_or_missing(path: Path, missing: str) -> dict:
    if not path.is_file():
        raise ModelNotFoundError(f"{path.parent}: {missing}")
    return read_json(path)


def text_encoder_folders(path: Path) -> list[Path]:
    """The Hugging Face model folder(s) of the pipeline's text encoder (a dual encoder has two)."""
    text = path / "text_encoder"
    return [text / "first", text / "second"] if (text / "first").is_dir() else [text]


def reader_folders(path: Path) -> list[Path]:
    """The optional report reader's weight folders (head, encoder); [] when the pipeline has no reader."""
    reader = path / "reader"
    return [reader, reader / "encoder"] if reader.is_dir() else []


def refiner_folders(path: Path) -> list[Path]:
    """The learned refiner's stage folders (``refiner/stage_<k>``); [] when the pipeline has none."""
    from medgen.refine.model import stage_folders

    return stage_folders(path / "refiner")


def load_optional_components(path: Path):
    """(ReportReader or None, AnatomyBank or None, [LearnedStage]) of a pipeline folder (``reader/``,
    ``anatomy_bank/``, ``refiner/``)."""
    reader = bank = None
    refiner = []
    if refiner_folders(path):
        from medgen.refine.model import load_refiner

        refiner = load_refiner(path / "refiner")
    if (path / "anatomy_bank").is_dir():
        from medgen.layout import AnatomyBank

        bank = AnatomyBank.from_pretrained(path / "anatomy_bank")
    if (path / "reader").is_dir():
        from medgen.reader import ReportReader

        with quiet_transformers():
            reader = ReportReader.from_pretrained(path / "reader").float()
    return reader, bank, refiner


def save_optional_components(path: Path, reader, bank, refiner=(), dtype=None) -> None:
    """Write the reader (floating weights as `dtype` when given), the anatomy bank and the refiner stages
    (those given) into a pipeline folder."""
    if reader is not None:
        reader.save_pretrained(path / "reader", dtype=dtype)
    if bank is not None:
        bank.save_pretrained(path / "anatomy_bank")
    for k, stage in enumerate(refiner or (), start=1):
        stage.save_pretrained(path / "refiner" / f"stage_{k}")


def weight_folders(path: Path) -> list[Path]:
    """Folders of the pipeline that must hold safetensors weights."""
    bank = [path / "anatomy_bank"] if (path / "anatomy_bank").is_dir() else []
    return [*text_encoder_folders(path), path / "autoencoder", path / "unet", *reader_folders(path), *bank,
            *refiner_folders(path)]


def weight_checksums(path: Path) -> dict[str, str]:
    """sha256 of every safetensors file of the pipeline folder, keyed by its relative path (sorted)."""
    files = sorted(f for folder in weight_folders(path) for f in folder.glob("*.safetensors"))
    return {f.relative_to(path).as_posix(): sha256_file(f) for f in files}


def verify_checksums(path: Path, recorded: dict) -> dict[str, str]:
    """Compare the weight files with the checksums recorded in model_index.json; returns the checksums."""
    actual = weight_checksums(path)
    storage.verify_checksums(path, recorded, INDEX_NAME, actual)
    return actual
