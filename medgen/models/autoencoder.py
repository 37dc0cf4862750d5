"""First-stage networks: the 3D KL autoencoder (VAE) and its patch discriminator (both MONAI).

``build_autoencoder`` / ``build_discriminator`` take a plain dict of constructor kwargs (the
``autoencoder:`` / ``discriminator:`` sections of an experiment YAML); missing keys fall back to
the defaults below (a small 3D VAE, 1 channel in/out, 4 latent channels, 4x downsampling).

With ``label_nc`` in the config the autoencoder is anatomy-aware: MONAI's ``SPADEAutoencoderKL``, whose
decoder is modulated at every scale by the layout channels (`medgen.layout.labels.CHANNELS`: label one-hots
and the lesion density map), so lesion, fluid and emphysema attenuation come from the layout rather than
from what a 4x latent can remember. `autoencode` / `decode_latents` call either kind the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL, PatchDiscriminator, SPADEAutoencoderKL

from medgen.errors import InputFileError
from medgen.io.weights import PretrainedMixin, load_weights, save_weights

AUTOENCODER_DEFAULTS: dict[str, Any] = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "channels": (16, 32, 64),
    "latent_channels": 4,
    "num_res_blocks": 1,
    "attention_levels": (False, False, False),
    "norm_num_groups": 8,
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
}

# Extra constructor kwargs of the anatomy-aware (SPADE) autoencoder.
SPADE_KEYS = ("label_nc", "spade_intermediate_channels")
AUTOENCODER_KEYS = frozenset(AUTOENCODER_DEFAULTS) | frozenset(SPADE_KEYS)

DISCRIMINATOR_DEFAULTS: dict[str, Any] = {
    "spatial_dims": 3,
    "num_layers_d": 3,
    "channels": 16,
    "in_channels": 1,
    "out_channels": 1,
}


def _tuplify(cfg: dict[str, Any]) -> dict[str, Any]:
    # YAML/JSON give lists; MONAI accepts sequences but tuples keep configs hashable/clean.
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def autoencoder_config(config: dict | None = None) -> dict[str, Any]:
    """The full AutoencoderKL kwargs: `config` over `AUTOENCODER_DEFAULTS`.

    If `channels` is given without `attention_levels`, attention defaults to all-False with the right length.
    """
    config = dict(config or {})
    cfg = dict(AUTOENCODER_DEFAULTS)
    if "channels" in config and "attention_levels" not in config:
        cfg["attention_levels"] = (False,) * len(config["channels"])
    cfg.update(config)
    return _tuplify(cfg)


def build_autoencoder(config: dict | None = None) -> AutoencoderKL | SPADEAutoencoderKL:
    """MONAI ``AutoencoderKL`` (or ``SPADEAutoencoderKL`` when `config` has ``label_nc``) from a dict of its
    constructor kwargs (defaults: small 3D VAE, 4x downsampling)."""
    cfg = autoencoder_config(config)
    unknown = sorted(set(cfg) - AUTOENCODER_KEYS)
    if unknown:
        raise ValueError(f"unknown autoencoder config key(s) {unknown}")
    if "label_nc" in cfg:
        return SPADEAutoencoderKL(**cfg)
    return AutoencoderKL(**cfg)


def is_layout_aware(autoencoder) -> bool:
    """True for an autoencoder whose decoder needs the layout channels."""
    return isinstance(autoencoder, SPADEAutoencoderKL)


def autoencode(autoencoder, x: torch.Tensor, layout: torch.Tensor | None = None):
    """(reconstruction, z_mu, z_sigma) of images x (B, 1, X, Y, Z); `layout` (B, C, X, Y, Z) for a SPADE one."""
    if is_layout_aware(autoencoder):
        if layout is None:
            raise ValueError("this autoencoder is layout-aware: pass the layout channels")
        return autoencoder(x, layout)
    return autoencoder(x)


def decode_latents(autoencoder, z: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
    """Decode latents z (B, C, x, y, z); `layout` at image resolution for a layout-aware autoencoder."""
    if is_layout_aware(autoencoder):
        if layout is None:
            raise ValueError("this autoencoder is layout-aware: pass the layout channels")
        return autoencoder.decode(z, layout)
    return autoencoder.decode(z)


class TrainedAutoencoder(PretrainedMixin):
    """A trained autoencoder as a component: the network (`model`) and its `config` (the constructor kwargs,
    ``scale_factor`` = 1 / std of the latent means, and what it was trained on). Saved (`save_pretrained`)
    as ``config.json`` + ``model.safetensors``, the layout of a pipeline's ``autoencoder/`` folder."""

    def __init__(self, model: torch.nn.Module, config: dict):
        self.model, self.config = model, dict(config)

    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        save_weights(self.model, folder / self.weights_name, dtype)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.config.items()}

    @classmethod
    def _from_files(cls, folder: Path, config: dict, device="cpu") -> TrainedAutoencoder:
        try:
            model = build_autoencoder({k: v for k, v in config.items() if k in AUTOENCODER_KEYS})
        except (TypeError, ValueError) as err:
            raise InputFileError(folder / cls.config_name, f"invalid autoencoder config ({err})") from None
        load_weights(model, folder / cls.weights_name)
        return cls(model.to(device).eval(), config)

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return InputFileError(folder, "not an autoencoder folder (no config.json); run `medgen train vae` first")


def build_discriminator(config: dict | None = None) -> PatchDiscriminator:
    """MONAI ``PatchDiscriminator`` from a dict of its constructor kwargs (defaults in `DISCRIMINATOR_DEFAULTS`)."""
    cfg = dict(DISCRIMINATOR_DEFAULTS)
    cfg.update(config or {})
    return PatchDiscriminator(**_tuplify(cfg))


def latent_downsample_factor(config: dict | None = None) -> int:
    """Spatial downsampling of the autoencoder: ``2 ** (len(channels) - 1)``."""
    return 2 ** (len(autoencoder_config(config)["channels"]) - 1)


def latent_channels(config: dict | None = None) -> int:
    """Number of latent channels of the autoencoder built from `config`."""
    return int(autoencoder_config(config)["latent_channels"])
