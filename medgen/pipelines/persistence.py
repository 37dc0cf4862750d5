"""Saving and loading a `ReportToVolumePipeline` folder: one subfolder per component, ``model_index.json`` with
the config and the weights' checksums (the pipeline's `save_pretrained` / `from_pretrained` call these)."""

from __future__ import annotations

from pathlib import Path

import torch

from medgen._version import __version__
from medgen.diffusion import build_scheduler
from medgen.errors import InputFileError
from medgen.io import weights as storage
from medgen.io.atomic import atomic_dir
from medgen.models import ConditionalUNet, build_autoencoder
from medgen.pipelines import components
from medgen.pipelines import validation as check


def save_pipeline(pipe, path, *, dtype: torch.dtype | None = None, overwrite: bool = True) -> Path:
    """`ReportToVolumePipeline.save_pretrained`."""
    if dtype not in (None, torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"`dtype` must be None, torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        with storage.quiet_transformers():
            pipe.text_encoder.save_pretrained(tmp / "text_encoder", dtype=dtype)
        for name, module in (("autoencoder", pipe.autoencoder), ("unet", pipe.unet)):
            (tmp / name).mkdir()
            config = pipe.config["autoencoder"] if name == "autoencoder" else module.config
            storage.write_json(tmp / name / storage.CONFIG_NAME, dict(config))
            storage.save_weights(module, tmp / name / storage.WEIGHTS_NAME, dtype)
        (tmp / "scheduler").mkdir()
        storage.write_json(tmp / "scheduler" / storage.SCHEDULER_CONFIG_NAME, pipe.config["scheduler"])
        components.save_optional_components(tmp, pipe.reader, pipe.anatomy_bank, pipe.refiner, dtype)
        checksums = components.weight_checksums(tmp)
        storage.write_json(tmp / storage.INDEX_NAME, model_index(pipe, checksums))
    if dtype in (None, torch.float32):  # the files hold exactly these weights
        pipe.model_path, pipe.weights_sha256 = path, checksums
        pipe.model_version = __version__
    return path


def model_index(pipe, checksums: dict[str, str]) -> dict:
    """The ``model_index.json`` content: component classes, the config (less the per-component files), checksums."""
    return {
        "_class_name": type(pipe).__name__,
        "_medgen_version": __version__,
        "text_encoder": ["medgen.text", type(pipe.text_encoder).__name__],
        "autoencoder": ["monai.networks.nets", type(pipe.autoencoder).__name__],
        "unet": ["medgen.models", type(pipe.unet).__name__],
        "scheduler": ["monai.networks.schedulers", type(pipe.scheduler).__name__],
        **({"reader": ["medgen.reader", type(pipe.reader).__name__]} if pipe.reader is not None else {}),
        "config": {k: v for k, v in pipe.config.items() if k not in ("autoencoder", "scheduler")},
        "weights_sha256": checksums,
    }


def load_pipeline(cls, path, *, device="cpu"):
    """`ReportToVolumePipeline.from_pretrained`: build `cls` from a saved folder."""
    from medgen.text import load_text_encoder

    path = Path(path)
    device = check.check_device(device)
    index = components.check_pipeline_folder(path)
    checksums = components.verify_checksums(path, index.get("weights_sha256") or {})
    config = index.get("config") or {}
    if not isinstance(config, dict):
        raise InputFileError(path / storage.INDEX_NAME, "'config' must be a JSON object")
    config = {
        **config,
        "autoencoder": storage.read_json(path / "autoencoder" / storage.CONFIG_NAME),
        "scheduler": storage.read_json(path / "scheduler" / storage.SCHEDULER_CONFIG_NAME),
    }
    with storage.quiet_transformers():
        text_encoder = load_text_encoder({"name_or_path": str(path / "text_encoder")}).float()
    text_encoder.set_trainable_layers(0)  # inference: frozen, eval mode, embedding cache on
    autoencoder = _build(path / "autoencoder" / storage.CONFIG_NAME, build_autoencoder, config["autoencoder"])
    unet_config = storage.read_json(path / "unet" / storage.CONFIG_NAME)
    unet = _build(path / "unet" / storage.CONFIG_NAME, lambda c: ConditionalUNet(**c), unet_config)
    storage.load_weights(autoencoder, path / "autoencoder" / storage.WEIGHTS_NAME)
    storage.load_weights(unet, path / "unet" / storage.WEIGHTS_NAME)
    scheduler = _build(path / "scheduler" / storage.SCHEDULER_CONFIG_NAME, build_scheduler, config["scheduler"])
    reader, bank, refiner = components.load_optional_components(path)
    try:
        pipe = cls(text_encoder, autoencoder, unet, scheduler, config=config, reader=reader, anatomy_bank=bank,
                   refiner=refiner)
    except ValueError as err:
        raise InputFileError(path / storage.INDEX_NAME, str(err)) from None
    pipe.model_path, pipe.weights_sha256 = path, checksums
    pipe.model_version = index.get("_medgen_version")
    return pipe.to(device)


def _build(config_path: Path, builder, config: dict):
    """Build a component from its config; a config the builder rejects becomes one InputFileError."""
    try:
        return builder(config)
    except (TypeError, ValueError, KeyError) as err:
        raise InputFileError(config_path, f"invalid component config ({err})") from None
