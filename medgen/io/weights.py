"""Weights and configs on disk: JSON configs, safetensors weights (never pickles), checksums, and
`PretrainedMixin`, the one way every component is saved (`save_pretrained`) and loaded (`from_pretrained`).

Every failure is one sentence naming the file (`InputFileError`) or the missing folder
(`ModelNotFoundError`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import ClassVar

import torch

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.io.atomic import atomic_dir
from medgen.io.sidecar import read_json_object

INDEX_NAME = "model_index.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
# Key of a component's config JSON that records the sha256 of its safetensors files (relative path -> hex).
CHECKSUMS_KEY = "_weights_sha256"
# Weight formats that need unpickling: refused, whatever their content.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def read_json(path: Path) -> dict:
    """A JSON object from `path` (InputFileError if missing, not UTF-8/JSON, or not an object)."""
    return read_json_object(path)


def write_json(path: Path, data: dict, *, indent: int | None = 2) -> None:
    """`data` as UTF-8 JSON (numpy scalars and other number-likes written as floats)."""
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False, default=float) + "\n", encoding="utf-8")


def check_safetensors_only(folder: Path, *, recursive: bool = False) -> None:
    """`folder` (with `recursive`, or any folder below it) holds safetensors weights and no pickle weights
    (a pickle is refused, never opened)."""
    entries = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if p.is_file())
    pickles = [p for p in entries if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles:
        raise InputFileError(
            pickles[0], "pickle weights are refused (medgen never unpickles); convert them to safetensors"
        )
    files = [p for p in entries if p.suffix == ".safetensors"]
    if not files:
        raise InputFileError(folder, "no safetensors weights file" if recursive else f"no {WEIGHTS_NAME} weights file")
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


def folder_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every safetensors file below `folder`, keyed by its path relative to `folder` (sorted)."""
    return {f.relative_to(folder).as_posix(): sha256_file(f) for f in sorted(folder.rglob("*.safetensors"))}


def verify_checksums(folder: Path, recorded: dict, listed_in: str, actual: dict[str, str] | None = None) -> None:
    """Every file of `recorded` (path relative to `folder` -> sha256, as written in the file `listed_in`)
    exists and has that sha256 (`actual`: the checksums when already computed)."""
    if not isinstance(recorded, dict):
        raise InputFileError(folder / listed_in, "the recorded weight checksums must be a JSON object")
    for name, digest in recorded.items():
        file = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputFileError(folder / listed_in, f"weights file {name!r} lies outside the folder")
        if not file.is_file():
            raise InputFileError(file, f"weights file listed in {listed_in} is missing")
        if (actual[name] if actual is not None and name in actual else sha256_file(file)) != digest:
            raise InputFileError(file, f"sha256 does not match {listed_in}: the file is corrupt or was replaced")


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


class PretrainedMixin:
    """`save_pretrained(path)` / `from_pretrained(path)` for a component (as diffusers' ModelMixin + ConfigMixin).

    A component folder holds a config JSON (`config_name`: what rebuilds the component, plus
    ``_weights_sha256``: the sha256 of every safetensors file below the folder) and safetensors weights.
    Saving always writes a temporary folder that replaces `path` only once complete (`medgen.io.atomic`);
    loading refuses pickle weights, verifies the recorded checksums, then rebuilds the component from its
    config. Folders saved before checksums were recorded load unverified.

    A component class defines:
        `_save_files(folder, dtype, **options)`: write its weights (safetensors) and any other files into
            `folder`; returns its config. Default: ``self.config``, the state dict as `weights_name`.
        `_from_files(folder, config, **kwargs)`: the component from its config and weights. Default:
            ``cls(**config)`` with the state dict of `weights_name`, in eval mode.
        `_not_found(folder)`: the error for a folder without `config_name` (a class may name how to make one).
        `_check_config(folder, config)`: optional; refuses a config before any weight file is read.
    """

    config_name: ClassVar[str] = CONFIG_NAME
    weights_name: ClassVar[str] = WEIGHTS_NAME
    config_indent: ClassVar[int | None] = 2

    def save_pretrained(self, path, *, overwrite: bool = True, dtype: torch.dtype | None = None, **options) -> Path:
        """Write the component to the folder `path` (replaced atomically; refused if it exists without
        `overwrite`); `dtype` stores floating weights as that type (they load back as the component's own)."""
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            config = dict(self._save_files(tmp, dtype, **options))
            config[CHECKSUMS_KEY] = folder_checksums(tmp)
            write_json(tmp / self.config_name, config, indent=self.config_indent)
        return path

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        """Load a folder written by `save_pretrained` (safetensors only; recorded checksums verified)."""
        folder = Path(path).expanduser()
        if not (folder / cls.config_name).is_file():
            raise cls._not_found(folder)
        config = read_json(folder / cls.config_name)
        recorded = config.pop(CHECKSUMS_KEY, None)
        cls._check_config(folder, config)
        check_safetensors_only(folder, recursive=True)
        if recorded is not None:
            verify_checksums(folder, recorded, cls.config_name)
        return cls._from_files(folder, config, **kwargs)

    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        save_weights(self, folder / self.weights_name, dtype)
        return dict(self.config)

    @classmethod
    def _from_files(cls, folder: Path, config: dict):
        model = cls(**config)
        load_weights(model, folder / cls.weights_name)
        return model.eval()

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return ModelNotFoundError(f"no {cls.__name__} at {folder} (no {cls.config_name})")

    @classmethod
    def _check_config(cls, folder: Path, config: dict) -> None:
        pass


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
