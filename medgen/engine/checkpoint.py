"""Training checkpoints: one folder per checkpoint, safetensors + JSON only (nothing is unpickled).

Layout of ``<run>/checkpoints/<stage>/``::

    step-00000250/
        <module>.safetensors     one file per entry of `weights` (e.g. autoencoder, discriminator, unet)
        state.safetensors        every tensor of `state` (optimizer moments, EMA shadows, RNG states, ...)
        state.json               the rest of `state`, tensors replaced by references into state.safetensors
        meta.json                step, file list, time; written last
    latest                       name of the newest complete checkpoint folder
    .step-00000500.xxxx.part/    a checkpoint being written (ignored, removed by the next save)

A checkpoint is written into a hidden temporary folder and renamed into place, then `latest` is
replaced atomically; folders are deleted by renaming them to a hidden name first.  So a crash
(``kill -9``) never leaves a half-written or half-deleted checkpoint where a reader looks, and the
newest complete checkpoint is the highest ``step-*`` folder.  The last `keep_last` are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medgen.errors import InputFileError
from medgen.io.atomic import atomic_path

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "flatten_state",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "unflatten_state",
]

FORMAT_VERSION = 1
_TAGS = ("__tensor__", "__tuple__", "__items__")


# ------------------------------------------------------------------------------- state <-> JSON + tensors
def flatten_state(obj, tensors: dict | None = None, prefix: str = "s"):
    """Split a nested state (dicts, lists, tuples, tensors, JSON scalars) into JSON and a flat tensor dict.

    Tensors become ``{"__tensor__": key}``; tuples ``{"__tuple__": [...]}``; dicts whose keys are not all
    strings (optimizer state is keyed by int) ``{"__items__": [[key, value], ...]}``.
    Returns ``(json_obj, tensors)``.
    """
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}, tensors
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)]}, tensors
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)], tensors
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k in _TAGS for k in obj):
            return {k: flatten_state(v, tensors, f"{prefix}.{k}")[0] for k, v in obj.items()}, tensors
        items = [[flatten_state(k, tensors, f"{prefix}.k{i}")[0], flatten_state(v, tensors, f"{prefix}.v{i}")[0]]
                 for i, (k, v) in enumerate(obj.items())]
        return {"__items__": items}, tensors
    if isinstance(obj, np.generic):
        return obj.item(), tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix})")


def unflatten_state(obj, tensors: dict):
    """Inverse of `flatten_state`."""
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_hashable(unflatten_state(k, tensors)): unflatten_state(v, tensors) for k, v in obj["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    return obj


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


# -------------------------------------------------------------------------------------------- RNG
def get_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Global torch (+ CUDA), numpy and Python RNG states, plus the states of named generators."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what `get_rng_state` captured (named generators only for names present in both)."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])
    for name, gen in (generators or {}).items():
        if name in state.get("generators", {}):
            gen.set_state(state["generators"][name].to(torch.uint8))


# ------------------------------------------------------------------------------------ save / load
@dataclass
class Checkpoint:
    """A loaded checkpoint: `weights[module][param name]`, the nested training `state`, and `meta`."""

    path: Path
    step: int
    weights: dict[str, dict[str, torch.Tensor]]
    state: dict
    meta: dict


def _folder_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory, step: int, *, weights: dict[str, dict[str, torch.Tensor]], state: dict,
                    keep_last: int = 3, meta: dict | None = None) -> Path:
    """Write checkpoint ``directory/step-<step, 8 digits>`` atomically, point `latest` at it, keep the last `keep_last`.

    Args:
        weights: module name -> state dict (tensors), one safetensors file each.
        state: anything `flatten_state` accepts (optimizer/EMA/clipper state dicts, RNG states, counters).
        meta: extra JSON recorded in meta.json.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _folder_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=directory))
    try:
        files = []
        for name, sd in weights.items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"bad module name {name!r}")
            tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}
            save_file(tensors, str(tmp / f"{name}.safetensors"), metadata={"format": "pt"})
            files.append(f"{name}.safetensors")
        json_state, tensors = flatten_state(state)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(json_state, allow_nan=True))
        record = {"format": FORMAT_VERSION, "step": int(step), "weights": sorted(weights), "files": files,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(meta or {})}
        (tmp / "meta.json").write_text(json.dumps(record, indent=2))  # written last: marks completeness
        for f in tmp.iterdir():
            _fsync(f)
        if final.exists():  # the same step saved again: move the old one out of sight first
            _discard(final)
        os.replace(tmp, final)
        _fsync(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    with atomic_path(directory / "latest") as pointer:
        pointer.write_text(final.name + "\n")
    _prune(directory, keep_last, keep=final)
    return final


def _discard(path: Path) -> None:
    """Rename `path` to a hidden name (atomic), then delete it: a crash mid-delete leaves no half folder in view."""
    hidden = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.trash")
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def _complete(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.glob("step-*"):
        if p.is_dir() and (p / "meta.json").is_file():
            try:
                out.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                continue
    return sorted(out)


def _prune(directory: Path, keep_last: int, keep: Path) -> None:
    complete = _complete(directory)
    for _, path in complete[: max(0, len(complete) - max(1, keep_last))]:
        if path != keep:
            _discard(path)
    for pattern in (".step-*.part", ".step-*.trash"):  # left by a crash while writing / deleting
        for stale in directory.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(directory) -> Path | None:
    """The complete checkpoint with the highest step in `directory`, or None.

    A folder is complete when it holds meta.json (written last, before the folder is renamed into view).
    The `latest` pointer is for people and tools; it is not needed here (a crash between the rename and
    the pointer update leaves the pointer one checkpoint behind).
    """
    directory = Path(directory)
    complete = _complete(directory) if directory.is_dir() else []
    return complete[-1][1] if complete else None


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint folder written by `save_checkpoint` (safetensors + JSON; no pickle)."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise InputFileError(path, "not a complete checkpoint (no meta.json)")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise InputFileError(path, f"checkpoint format {meta.get('format')} is not {FORMAT_VERSION}")
        device = str(map_location)
        weights = {name: load_file(str(path / f"{name}.safetensors"), device=device) for name in meta["weights"]}
        tensors = load_file(str(path / "state.safetensors"), device="cpu")
        state = unflatten_state(json.loads((path / "state.json").read_text()), tensors)
    except InputFileError:
        raise
    except Exception as err:  # OSError, JSON errors, SafetensorError on a truncated file, missing keys
        raise InputFileError(path, f"unreadable checkpoint ({type(err).__name__}: {err})") from err
    return Checkpoint(path=path, step=int(meta["step"]), weights=weights, state=state, meta=meta)


class CheckpointManager:
    """Checkpoints of one training stage in `directory`; `enabled=False` (ranks other than 0) writes nothing."""

    def __init__(self, directory, keep_last: int = 3, enabled: bool = True):
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        self.enabled = enabled

    def save(self, step: int, *, weights: dict, state: dict, meta: dict | None = None) -> Path | None:
        if not self.enabled:
            return None
        return save_checkpoint(self.directory, step, weights=weights, state=state, keep_last=self.keep_last, meta=meta)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.directory)
