"""The slice preview model (SDXL-style, diffusers): a 2D latent autoencoder, a base UNet and an optional
refiner UNet, read through two text encoders.

- Text: `medgen.text.DualTextEncoder`: the pipeline's domain text encoder and the report reader's fine-tuned
  encoder; their token states are concatenated on features (cross-attention) and their pooled vectors feed
  the added embedding with the micro-conditioning (`medgen.slices.generator.data.MICRO`), as SDXL's
  ``text_time`` embedding.
- Layout: the layout slice's channels (`medgen.layout.labels.CHANNELS`), average-pooled to the latent grid,
  are joined to the latent as extra input channels (the 3D renderer's choice).
- Density: one guidance condition shared with the 3D code (`medgen.diffusion.guidance`): a branch without
  density sees the density channel zeroed and the micro-conditioning value `UNKNOWN_DENSITY`.
- Refiner: same design, trained only on the low-noise tail (t < `refiner_start`); sampling hands the base's
  latent to it there.

Folder layout (`save_pretrained`): preview.json, vae/, base/, refiner/, student/ (diffusers folders; the
student is the optional distilled sampler); the text encoders, reader and anatomy bank are named in preview.json
by path relative to the folder (the embedded preview reuses the default model's).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from medgen.diffusion.guidance import Guidance
from medgen.errors import InputFileError
from medgen.io.weights import PretrainedMixin, cast_safetensors
from medgen.layout.labels import N_CHANNELS
from medgen.slices.generator.data import MICRO, UNKNOWN_DENSITY, scaled_micro

CONFIG_NAME = "preview.json"
DEFAULT_GUIDANCE = Guidance(text=2.0, density=2.0)  # w_t = w_d: the text-only branch drops out (2 branches)
DEFAULT_UNET = {"block_out_channels": [32, 48, 64], "attention_head_dim": 8, "time_embed_dim": 16}


def build_unet(latent_channels: int, latent_size: int, text_dim: int, unet: dict | None = None):
    """UNet2DConditionModel with SDXL's ``text_time`` added embedding and the layout joined to the input."""
    from diffusers import UNet2DConditionModel

    options = {**DEFAULT_UNET, **(unet or {})}
    levels = len(options["block_out_channels"])
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels + N_CHANNELS, out_channels=latent_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        block_out_channels=tuple(options["block_out_channels"]), layers_per_block=1, norm_num_groups=16,
        cross_attention_dim=text_dim, attention_head_dim=options["attention_head_dim"],
        addition_embed_type="text_time", addition_time_embed_dim=options["time_embed_dim"],
        projection_class_embeddings_input_dim=len(MICRO) * options["time_embed_dim"] + text_dim)


def predict_noise(unet, latents, t, layout, conditions: dict, micro) -> torch.Tensor:
    """One UNet forward. `layout` (B, C, h, w) on the latent grid; `conditions` as
    `medgen.diffusion.guidance.expand_conditions` gives (token_states, attention_mask, pooled, density with
    NaN = no density); `micro` (B, 6) raw values (their density entry is replaced from `conditions`)."""
    density = conditions["density"].to(latents)
    known = ~torch.isnan(density)
    layout = layout.clone()
    layout[:, -1] *= known[:, None, None].to(layout)
    micro = torch.as_tensor(micro, dtype=torch.float32).clone()
    micro[:, -1] = torch.where(known.cpu(), density.cpu().nan_to_num(UNKNOWN_DENSITY), UNKNOWN_DENSITY)
    return unet(torch.cat([latents, layout.to(latents)], dim=1), t,
                encoder_hidden_states=conditions["token_states"].to(latents),
                encoder_attention_mask=conditions["attention_mask"].to(latents.device),
                added_cond_kwargs={"text_embeds": conditions["pooled"].to(latents),
                                   "time_ids": scaled_micro(micro).to(latents)}).sample


def pool_to_latent(layout: torch.Tensor, factor: int) -> torch.Tensor:
    """Layout channels at image resolution -> fractions per latent pixel."""
    return F.avg_pool2d(layout, kernel_size=factor, stride=factor)


class SlicePreviewModel(PretrainedMixin, torch.nn.Module):
    """VAE + base UNet (+ refiner) + the dual text encoder, with the config that ties them together.

    config keys: size (pixels), factor (VAE down-sampling), latent_channels, scale (latent scale factor),
    refiner_start (timestep below which the refiner denoises), num_train_timesteps, beta_schedule, unet
    (UNet options), training records, and `parts`: folders of the domain text encoder, the report reader
    (its encoder is the second text encoder) and the anatomy bank, relative to the model folder; an optional
    `reader_encoder` part pins the second text encoder to the one the preview was trained with when the
    pipeline's report reader has since been retrained.
    `sources` holds those folders' absolute paths while a model is built in memory.
    """

    config_name = CONFIG_NAME

    def __init__(self, vae, base, text_encoder, config: dict, refiner=None, sources: dict | None = None,
                 student=None):
        super().__init__()
        self.vae, self.base, self.refiner, self.text_encoder = vae, base, refiner, text_encoder
        self.student = student  # progressively distilled base (`medgen.slices.generator.distill`), or None
        self.config = dict(config)
        self.sources = dict(sources or {})

    @property
    def factor(self) -> int:
        return int(self.config["factor"])

    @property
    def scale(self) -> float:
        return float(self.config["scale"])

    @staticmethod
    def text_encoder_from(text_encoder_dir, reader_dir):
        from medgen.text import DualTextEncoder, TextEncoder

        return DualTextEncoder(TextEncoder.from_pretrained(str(text_encoder_dir)),
                               TextEncoder.from_pretrained(str(Path(reader_dir) / "encoder")))

    # ---------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path, *, overwrite: bool = False, parts: dict | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """Write preview.json, vae/, base/, refiner/, student/ and copies of the text encoder, reader and anatomy
        bank folders (atomically); with `parts` (name -> path relative to `path`, e.g. an embedded preview
        pointing at the default model's own folders) nothing is copied and preview.json points there."""
        return super().save_pretrained(path, overwrite=overwrite, dtype=dtype, parts=parts)

    def _save_files(self, folder: Path, dtype: torch.dtype | None, parts: dict | None = None) -> dict:
        import shutil

        if parts is None:
            parts = {}
            for name, source in self.sources.items():
                if source is not None:
                    shutil.copytree(source, folder / name)
                    parts[name] = name
        self.config["parts"] = dict(parts)
        self.vae.save_pretrained(folder / "vae")
        self.base.save_pretrained(folder / "base")
        for name in ("refiner", "student"):
            if getattr(self, name) is not None:
                getattr(self, name).save_pretrained(folder / name)
        if dtype is not None:
            for name in ("vae", "base", "refiner", "student"):
                if (folder / name).is_dir():
                    cast_safetensors(folder / name, dtype)
        return self.config

    @classmethod
    def _from_files(cls, folder: Path, config: dict) -> SlicePreviewModel:
        """Load a folder written by `save_pretrained` (local files only)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel

        sources = {name: (folder / rel).resolve() for name, rel in config["parts"].items() if rel}
        for name, where in sources.items():
            if not where.is_dir():
                raise InputFileError(folder, f"the preview's {name} folder {where} is missing")
        text = cls.text_encoder_from(sources["text_encoder"], sources.get("reader_encoder", sources["reader"]))
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32, low_cpu_mem_usage=False).eval()
        base = UNet2DConditionModel.from_pretrained(folder / "base", torch_dtype=torch.float32,
                                                    low_cpu_mem_usage=False).eval()
        refiner = (UNet2DConditionModel.from_pretrained(folder / "refiner", torch_dtype=torch.float32,
                                                      low_cpu_mem_usage=False).eval()
                   if (folder / "refiner").is_dir() else None)
        student = (UNet2DConditionModel.from_pretrained(folder / "student", torch_dtype=torch.float32,
                                                        low_cpu_mem_usage=False).eval()
                   if (folder / "student").is_dir() else None)
        return cls(vae, base, text, config, refiner, sources, student)

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return InputFileError(folder, f"not a slice preview model folder (no {CONFIG_NAME}); train one with "
                                      "`medgen train slices preview` or use the embedded default")
