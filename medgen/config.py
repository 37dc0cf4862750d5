"""Experiment configuration: one YAML file per experiment (see ``configs/phantom-64.yaml`` for the schema).

`load_config` reads the YAML, applies ``key.sub=value`` overrides (the CLI's ``--set``), checks the
sections and the values the training code relies on, and returns a plain dict.  Relative paths in a
config (``output_dir``, ``data.manifest``, ``text_encoder.name_or_path``) are resolved by `resolve_path`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from medgen.errors import InputFileError

REQUIRED_SECTIONS = ("name", "output_dir", "data", "autoencoder")
STAGE_SECTIONS = {
    "vae": ("discriminator", "train_vae"),
    "ldm": ("text_encoder", "unet", "scheduler", "train_ldm"),
}
# Key under which `load_config` records where the file was read from (used by `resolve_path`).
SOURCE_KEY = "_config_path"


def load_config(path, overrides=None, *, stages=("vae", "ldm")) -> dict:
    """Read an experiment YAML into a dict, apply `overrides` and validate it.

    Args:
        path: the YAML file.
        overrides: ``["train_ldm.batch_size=4", "data.manifest=/x/m.jsonl", ...]``; the value is parsed
            as YAML (numbers, booleans, null, lists, ``{...}`` mappings); list items by index (``stages.0.steps``).
        stages: the training stages whose sections must be present ("vae", "ldm").
    Raises:
        InputFileError: missing file, invalid YAML, or a missing/invalid section (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "config file not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputFileError(path, f"invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise InputFileError(path, f"expected a YAML mapping at the top level, got {type(config).__name__}")
    for item in overrides or ():
        apply_override(config, item)
    try:
        validate_config(config, stages=stages)
    except ValueError as err:
        raise InputFileError(path, str(err)) from None
    config[SOURCE_KEY] = str(path.resolve())
    return config


def apply_override(config: dict, item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (the value is parsed as YAML)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ValueError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node: Any = config
    for part in parts[:-1]:
        nxt = _child(node, part, item)
        if nxt is None:
            nxt = {}
            _set(node, part, nxt, item)
        node = nxt
    _set(node, parts[-1], value, item)


def _child(node, part: str, item: str):
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if isinstance(node, dict):
        return node.get(part)
    raise ValueError(f"override {item!r}: {part!r} is inside a {type(node).__name__}, not a mapping or list")


def _set(node, part: str, value, item: str) -> None:
    if isinstance(node, list):
        node[_index(node, part, item)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ValueError(f"override {item!r}: cannot set {part!r} inside a {type(node).__name__}")


def _index(node: list, part: str, item: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ValueError(f"override {item!r}: {part!r} is not an index of a list of {len(node)} items")
    return int(part)


def _require(config: dict, section: str, kind=dict) -> Any:
    if section not in config or config[section] is None:
        raise ValueError(f"missing required section `{section}`")
    if not isinstance(config[section], kind):
        raise ValueError(f"`{section}` must be a {kind.__name__}, got {type(config[section]).__name__}")
    return config[section]


def _positive(section: dict, key: str, where: str, kind=int, allow_zero: bool = False) -> None:
    value = section.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok or (kind is int and int(value) != value):
        need = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"`{where}.{key}` must be {need} {kind.__name__}, got {value!r}")


def _probability(section: dict, key: str, where: str) -> None:
    value = section.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{where}.{key}` must be a probability in [0, 1], got {value!r}")


def validate_grad_clip(value, where: str) -> None:
    """``null`` | ``{mode: fixed, max_norm}`` | ``{mode: adaptive, window, factor[, statistic]}``."""
    if value is None:
        return
    if not isinstance(value, dict) or value.get("mode") not in ("fixed", "adaptive"):
        raise ValueError(f"`{where}` must be null, {{mode: fixed, max_norm: N}} or {{mode: adaptive, window: N, factor: F}}, got {value!r}")
    if value["mode"] == "fixed":
        _positive(value, "max_norm", where, float)
    else:
        _positive(value, "window", where)
        _positive(value, "factor", where, float)
        if value.get("statistic", "median") not in ("median", "mean"):
            raise ValueError(f"`{where}.statistic` must be 'median' or 'mean', got {value.get('statistic')!r}")


def validate_config(config: dict, *, stages=("vae", "ldm")) -> None:
    """Raise ValueError naming the first missing section or bad value the training code would trip on."""
    for section in REQUIRED_SECTIONS:
        _require(config, section, str if section in ("name", "output_dir") else dict)
    if not isinstance(config.get("seed", 0), int):
        raise ValueError(f"`seed` must be an integer, got {config.get('seed')!r}")
    if not config["data"].get("manifest"):
        raise ValueError("missing `data.manifest` (path of the manifest.jsonl to train on)")
    for stage in stages:
        if stage not in STAGE_SECTIONS:
            raise ValueError(f"unknown training stage {stage!r}; expected one of {sorted(STAGE_SECTIONS)}")
        for section in STAGE_SECTIONS[stage]:
            _require(config, section)
    if "vae" in stages:
        tv = config["train_vae"]
        for key in ("steps", "batch_size", "checkpoint_every", "validate_every"):
            _positive(tv, key, "train_vae")
        for key in ("lr",):
            _positive(tv, key, "train_vae", float)
        for key in ("kl_weight", "adv_weight"):
            _positive(tv, key, "train_vae", float, allow_zero=True)
        for key in ("adv_start", "warmup"):
            _positive(tv, key, "train_vae", int, allow_zero=True)
        if tv.get("full_volume_steps") is not None:  # optional
            _positive(tv, "full_volume_steps", "train_vae", int, allow_zero=True)
        validate_grad_clip(tv.get("grad_clip"), "train_vae.grad_clip")
    if "ldm" in stages:
        tl = config["train_ldm"]
        for key in ("batch_size", "checkpoint_every", "validate_every"):
            _positive(tl, key, "train_ldm")
        _positive(tl, "lr", "train_ldm", float)
        _positive(tl, "warmup", "train_ldm", int, allow_zero=True)
        for key in ("drop_text", "drop_density"):
            _probability(tl, key, "train_ldm")
        decay = tl.get("ema_decay", 0.999)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"`train_ldm.ema_decay` must be in [0, 1), got {decay!r}")
        validate_grad_clip(tl.get("grad_clip"), "train_ldm.grad_clip")
        stages_cfg = tl.get("stages")
        if not isinstance(stages_cfg, list) or not stages_cfg:
            raise ValueError("`train_ldm.stages` must be a non-empty list of {steps, trainable_text_layers[, text_lr]}")
        for i, st in enumerate(stages_cfg):
            where = f"train_ldm.stages[{i}]"
            if not isinstance(st, dict):
                raise ValueError(f"`{where}` must be a mapping, got {st!r}")
            _positive(st, "steps", where)
            _positive({"n": st.get("trainable_text_layers", 0)}, "n", f"{where}.trainable_text_layers", allow_zero=True)
            if st.get("trainable_text_layers", 0) > 0:
                _positive({"text_lr": st.get("text_lr")}, "text_lr", where, float)
        for key in ("train", "sample"):
            if not isinstance(config["scheduler"].get(key), dict):
                raise ValueError(f"missing `scheduler.{key}` (the {key} noise-scheduler config)")


def repo_root(config: dict | None = None) -> Path | None:
    """The repository holding the config file (nearest parent with pyproject.toml or .git), if any."""
    source = (config or {}).get(SOURCE_KEY)
    if not source:
        return None
    for parent in Path(source).parents:
        if (parent / "pyproject.toml").is_file() or (parent / ".git").exists():
            return parent
    return None


def resolve_path(path, config: dict | None = None, *, must_exist: bool = False) -> Path:
    """Resolve a path from a config.

    Absolute paths (and ``~``) stay as they are.  A relative path is taken relative to the current
    working directory when it exists there, else relative to the repository holding the config file
    (so ``medgen train ... --config configs/x.yaml`` works from any folder of the repository); a path
    that exists in neither place resolves against the repository when there is one, else the cwd.
    """
    p = Path(str(path)).expanduser()
    if p.is_absolute():
        resolved = p
    else:
        cwd_path = Path.cwd() / p
        root = repo_root(config)
        if cwd_path.exists() or root is None:
            resolved = cwd_path
        else:
            resolved = root / p
    if must_exist and not resolved.exists():
        raise FileNotFoundError(f"{path}: not found (resolved to {resolved})")
    return resolved


def public_config(config: dict) -> dict:
    """A deep copy without the bookkeeping keys added by `load_config` (for saving beside outputs)."""
    return {k: copy.deepcopy(v) for k, v in config.items() if not k.startswith("_")}
