"""Weights and configs on disk: JSON configs, safetensors weights (never pickles), checksums.

Every failure is one sentence naming the file (`InputFileError`) or the missing folder
(`ModelNotFoundError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch

from medgen.errors import InputFileError
from medgen.io.sidecar import read_json_object

INDEX_NAME = "model_index.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
# Weight formats that need unpickling: refused, whatever their content.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def read_json(path: Path) -> dict:
    """A JSON object from `path` (InputFileError if missing, not UTF-8/JSON, or not an object)."""
    return read_json_object(path)


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


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
