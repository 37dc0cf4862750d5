"""A learned x2 refiner stage: a small 3D residual CNN on the trilinear upsample (one step, no sampler).

The network sees the volume upsampled x2 (HU / 1000) and predicts what trilinear interpolation misses: the
sharp edges and fine texture of a CT at the finer spacing. Each stage (5 -> 2.5 mm, 2.5 -> 1.25, ...)
has its own weights, trained on phantom patches built directly at the finer spacing
(`medgen.refine.train`). No normalisation layers: every output voxel depends only on inputs within
`reach` voxels, so tiles with a halo of that reach reproduce the whole-volume result exactly (no seams).

A refiner folder holds ``stage_<k>/`` (k = 1 for native -> x2, ...), each a `LearnedStage.save_pretrained`
folder: ``config.json`` (constructor arguments plus the spacing it was trained for) and ``refiner.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.io.weights import PretrainedMixin, save_weights
from medgen.refine.cascade import tilewise

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "refiner.safetensors"
HU_SCALE = 1000.0


class RefinerNet(nn.Module):
    """x -> x + residual(x) for x the x2-upsampled volume (B, 1, X, Y, Z) in HU / 1000."""

    def __init__(self, channels: int = 16, blocks: int = 3):
        super().__init__()
        if channels < 1 or blocks < 0:
            raise ValueError(f"`channels` must be >= 1 and `blocks` >= 0, got {channels}, {blocks}")
        self.config = {"channels": int(channels), "blocks": int(blocks)}
        self.head = nn.Conv3d(1, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv3d(channels, channels, 3, padding=1), nn.SiLU(),
                          nn.Conv3d(channels, channels, 3, padding=1)) for _ in range(blocks))
        self.tail = nn.Conv3d(channels, 1, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as the identity on the upsample (= trilinear)
        nn.init.zeros_(self.tail.bias)

    @property
    def reach(self) -> int:
        """Output voxels of context each output voxel depends on (3x3x3 convolutions)."""
        return 2 + 2 * self.config["blocks"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        for block in self.blocks:
            h = h + block(h)
        return x + self.tail(F.silu(h))


def upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)


class LearnedStage(PretrainedMixin):
    """One x2 stage of the cascade: trilinear upsample, then `RefinerNet`; run tile by tile.

    Saved (`save_pretrained`) as ``config.json`` (the net's constructor arguments and ``spacing_mm``) and
    ``refiner.safetensors``.
    """

    config_name, weights_name = CONFIG_NAME, WEIGHTS_NAME

    def __init__(self, net: RefinerNet, *, spacing_mm: float, name: str = "learned refiner", tile: int = 48):
        self.net = net.eval()
        self.spacing_mm = float(spacing_mm)  # the output spacing it was trained for
        self.name = name
        self.tile = tile

    @property
    def halo(self) -> int:
        return self.net.reach // 2 + 2  # input voxels (the trilinear step reaches one more)

    def __call__(self, hu: np.ndarray, *, progress: bool = False, context=None) -> np.ndarray:
        device = next(self.net.parameters()).device

        def refine(piece):
            with torch.no_grad():
                return self.net(upsample2(piece.to(device) / HU_SCALE)).cpu() * HU_SCALE

        out = tilewise(refine, hu, factor=2, halo=self.halo, tile=self.tile, progress=progress, desc=self.name)
        return np.clip(out, -1024.0, 3071.0, out=out)

    # ---------------------------------------------------------------------------------- persistence
    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        save_weights(self.net, folder / WEIGHTS_NAME, dtype or torch.float32)
        return {**self.net.config, "spacing_mm": self.spacing_mm}

    @classmethod
    def _from_files(cls, folder: Path, config: dict) -> LearnedStage:
        from safetensors.torch import load_file

        try:
            net = RefinerNet(channels=config["channels"], blocks=config["blocks"])
            net.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
            spacing = float(config["spacing_mm"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputFileError(folder, f"invalid refiner stage ({str(err).splitlines()[0]})") from None
        return cls(net, spacing_mm=spacing)

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return ModelNotFoundError(f"{folder}: not a refiner stage (needs {CONFIG_NAME} and {WEIGHTS_NAME})")


def stage_folders(folder) -> list[Path]:
    """``stage_1``, ``stage_2``, ... of a refiner folder, in order, stopping at the first gap."""
    folder = Path(folder)
    out = []
    while (folder / f"stage_{len(out) + 1}").is_dir():
        out.append(folder / f"stage_{len(out) + 1}")
    return out


def load_refiner(folder) -> list[LearnedStage]:
    """The learned stages of a refiner folder (stage 1 first), each read by `LearnedStage.from_pretrained`."""
    return [LearnedStage.from_pretrained(f) for f in stage_folders(folder)]
