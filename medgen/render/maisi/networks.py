"""MAISI's three networks and its scheduler, built from a `MaisiBundle` and loaded without unpickling.

Checkpoints hold plain state dicts and tensors, so ``torch.load(path, weights_only=True)`` reads them:
the VAE file is a state dict (or ``{"unet_state_dict": ...}``), the diffusion file
``{"unet_state_dict", "scale_factor"}``, the ControlNet file ``{"controlnet_state_dict"}``. As in NVIDIA's
procedure, the ControlNet starts from the diffusion UNet's weights (every name and shape they share) before
its own are loaded. A checkpoint that needs code to unpickle is refused in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from medgen.errors import MedgenError
from medgen.render.maisi.bundle import MaisiBundle, instantiate


class MaisiWeightsError(MedgenError, ValueError):
    """A checkpoint that cannot be read as plain weights, or that does not fit its network."""


@dataclass
class MaisiNetworks:
    """The loaded, eval-mode networks of a MAISI folder and what was loaded."""

    autoencoder: torch.nn.Module
    diffusion_unet: torch.nn.Module
    controlnet: torch.nn.Module
    scheduler: object
    scale_factor: float
    device: torch.device
    sha256: dict[str, str] = field(default_factory=dict)
    load_report: dict = field(default_factory=dict)

    @property
    def include_body_region(self) -> bool:
        return bool(getattr(self.diffusion_unet, "include_top_region_index_input", False))

    @property
    def include_modality(self) -> bool:
        return getattr(self.diffusion_unet, "num_class_embeds", None) is not None

    @property
    def latent_channels(self) -> int:
        return int(self.diffusion_unet.in_channels)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint as tensors and plain containers (``weights_only=True``); `MaisiWeightsError` otherwise."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an UnpicklingError names the class it refused to build
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MaisiWeightsError(f"{path}: cannot be read as plain weights with torch.load(weights_only=True) "
                                f"({first[:160]}); medgen never unpickles code") from None
    if not isinstance(data, dict):
        raise MaisiWeightsError(f"{path}: expected a dict of weights, got {type(data).__name__}")
    return data


def _state(data: dict, key: str | None, path: Path) -> dict:
    state = data.get(key, data) if key else data
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MaisiWeightsError(f"{path}: no state dict{f' under {key!r}' if key else ''}")
    return state


def _load(module: torch.nn.Module, state: dict, path: Path, name: str, report: dict) -> None:
    own = module.state_dict()
    matched = [k for k in state if k in own]
    shape_bad = [k for k in matched if tuple(own[k].shape) != tuple(state[k].shape)]
    if not matched or shape_bad:
        bad = shape_bad[0] if shape_bad else "no matching key"
        raise MaisiWeightsError(f"{path}: weights do not fit the {name} of this folder's network config ({bad})")
    result = module.load_state_dict(state, strict=False)
    report[name] = {"missing": len(result.missing_keys), "unexpected": len(result.unexpected_keys)}
    if len(result.missing_keys) > 0.01 * len(own):
        raise MaisiWeightsError(f"{path}: {len(result.missing_keys)} of the {name}'s {len(own)} weights are "
                                "missing; the checkpoint belongs to another network")


def load_networks(bundle: MaisiBundle, device="cpu") -> MaisiNetworks:
    """Build the networks from the folder's network config and load their checkpoints onto `device`."""
    from medgen.io.weights import sha256_file

    device = torch.device(device)
    files, report = bundle.files, {}
    autoencoder = instantiate(bundle.network_def("autoencoder_def", device.type))
    data = read_checkpoint(files["autoencoder"])
    _load(autoencoder, _state(data, "unet_state_dict" if "unet_state_dict" in data else None,
                              files["autoencoder"]), files["autoencoder"], "autoencoder", report)

    unet = instantiate(bundle.network_def("diffusion_unet_def", device.type))
    data = read_checkpoint(files["diffusion"])
    _load(unet, _state(data, "unet_state_dict", files["diffusion"]), files["diffusion"], "diffusion_unet", report)
    scale = data.get("scale_factor")
    if not isinstance(scale, (torch.Tensor, float, int)):
        raise MaisiWeightsError(f"{files['diffusion']}: no 'scale_factor' (the latent scale of the VAE)")
    scale_factor = float(torch.as_tensor(scale).float().reshape(-1)[0])
    if not scale_factor > 0:
        raise MaisiWeightsError(f"{files['diffusion']}: scale_factor must be positive, got {scale_factor}")

    controlnet = instantiate(bundle.network_def("controlnet_def", device.type))
    own = controlnet.state_dict()  # NVIDIA's start: the UNet's weights wherever names and shapes agree
    controlnet.load_state_dict({k: v for k, v in unet.state_dict().items()
                                if k in own and own[k].shape == v.shape}, strict=False)
    data = read_checkpoint(files["controlnet"])
    _load(controlnet, _state(data, "controlnet_state_dict", files["controlnet"]), files["controlnet"],
          "controlnet", report)
    scheduler = instantiate(bundle.network_def("noise_scheduler", device.type))
    for module in (autoencoder, unet, controlnet):
        module.to(device).eval()
    sha = {str(files[k].relative_to(bundle.root)): sha256_file(files[k])
           for k in ("autoencoder", "diffusion", "controlnet")}
    return MaisiNetworks(autoencoder, unet, controlnet, scheduler, scale_factor, device, sha, report)
