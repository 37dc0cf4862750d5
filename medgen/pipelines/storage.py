"""Reading and writing pipeline folders: JSON configs, safetensors weights (never pickles), checksums.

A pipeline folder (written by `ReportToVolumePipeline.save_pretrained`)::

    model_index.json                    class name, medgen version, component classes, pipeline config,
                                        sha256 of every weight file
    text_encoder/                       TextEncoder.save_pretrained (HF config + model.safetensors + tokenizer)
    autoencoder/config.json, model.safetensors
    unet/config.json, model.safetensors
    scheduler/scheduler_config.json

Every failure is one sentence naming the file (`InputFileError`) or the missing folder
(`ModelNotFoundError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.io.sidecar import read_json_object

INDEX_NAME = "model_index.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
COMPONENTS = ("text_encoder", "autoencoder", "unet", "scheduler")
# Weight formats that need unpickling: refused, whatever their content.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def read_json(path: Path) -> dict:
    """A JSON object from `path` (InputFileError if missing, not UTF-8/JSON, or not an object)."""
    return read_json_object(path)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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

        bank = AnatomyBank.load(path / "anatomy_bank")
    if (path / "reader").is_dir():
        from medgen.reader import ReportReader

        with quiet_transformers():
            reader = ReportReader.from_pretrained(path / "reader").float()
    return reader, bank, refiner


def save_optional_components(path: Path, reader, bank, refiner=()) -> None:
    """Write the reader, the anatomy bank and the refiner stages (those given) into a pipeline folder."""
    if reader is not None:
        reader.save_pretrained(path / "reader")
    if bank is not None:
        bank.save(path / "anatomy_bank")
    for k, stage in enumerate(refiner or (), start=1):
        stage.save(path / "refiner" / f"stage_{k}")


def weight_folders(path: Path) -> list[Path]:
    """Folders of the pipeline that must hold safetensors weights."""
    bank = [path / "anatomy_bank"] if (path / "anatomy_bank").is_dir() else []
    return [*text_encoder_folders(path), path / "autoencoder", path / "unet", *reader_folders(path), *bank,
            *refiner_folders(path)]


def check_safetensors_only(folder: Path) -> None:
    """`folder` holds safetensors weights and no pickle weights (a pickle is refused, never opened)."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise InputFileError(
            folder / pickles[0], "pickle weights are refused (medgen never unpickles); convert them to safetensors"
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputFileError(folder, f"no {WEIGHTS_NAME} weights file")
    from safetensors import safe_open

    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                handle.keys()
        except Exception as err:  # SafetensorError, OSError, ... on a truncated or foreign file
            raise InputFileError(file, f"not a valid safetensors file ({_first_line(err)})") from None


def save_weights(module: torch.nn.Module, path: Path, dtype: torch.dtype | None = None) -> None:
    """Write the module's state dict as safetensors; floating tensors cast to `dtype` when given."""
    from safetensors.torch import save_file

    state = {key: _cast(key, value.detach().cpu(), dtype).contiguous() for key, value in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def _cast(name: str, value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """`value` as `dtype` (floating tensors only); refuses a cast that overflows to inf."""
    if dtype is None or not value.is_floating_point():
        return value
    cast = value.to(dtype)
    if not torch.isfinite(cast).all() and torch.isfinite(value).all():
        raise ValueError(f"weight {name} overflows {dtype} (max |w| = {value.abs().max().item():.3g}); save as float32")
    return cast


def load_weights(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load a safetensors state dict into `module` (strict; values cast to the module's dtypes)."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as err:
        raise InputFileError(path, f"not a valid safetensors file ({_first_line(err)})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputFileError(path, f"weights do not match {path.parent / CONFIG_NAME} ({_first_line(err)})") from None
    return module


def cast_safetensors(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite every ``*.safetensors`` file in `folder` with floating tensors cast to `dtype` (keeps metadata)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for file in folder.glob("*.safetensors"):
        with safe_open(file, framework="pt") as handle:
            metadata = handle.metadata()
            state = {k: handle.get_tensor(k) for k in handle.keys()}
        state = {k: _cast(k, v, dtype) for k, v in state.items()}
        save_file(state, str(file), metadata=metadata)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_checksums(path: Path) -> dict[str, str]:
    """sha256 of every safetensors file of the pipeline folder, keyed by its relative path (sorted)."""
    files = sorted(f for folder in weight_folders(path) for f in folder.glob("*.safetensors"))
    return {f.relative_to(path).as_posix(): sha256_file(f) for f in files}


def verify_checksums(path: Path, recorded: dict) -> dict[str, str]:
    """Compare the weight files with the checksums recorded in model_index.json; returns the checksums."""
    actual = weight_checksums(path)
    for name, digest in recorded.items():
        if name not in actual:
            raise InputFileError(path / name, "weights file listed in model_index.json is missing")
        if actual[name] != digest:
            raise InputFileError(path / name, "sha256 does not match model_index.json: the file is corrupt or was replaced")
    return actual


def combined_checksum(checksums: dict[str, str]) -> str:
    """One sha256 for the whole model: over the sorted ``relative-path  sha256`` lines."""
    text = "".join(f"{name}  {digest}\n" for name, digest in sorted(checksums.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' own "Loading weights" / "Writing model shards" bars while components load/save."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
