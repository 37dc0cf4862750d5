"""The report-conditioned latent diffusion UNet (MONAI ``DiffusionModelUNet`` + two conditioning paths).

Conditioning:

1. **Token-level text** -> cross-attention.  ``token_states`` (B, L, D) from the text encoder are the
   cross-attention context of MONAI's spatial transformers (``with_conditioning=True``).
   MONAI's ``CrossAttentionBlock`` has no key-padding mask, so padded tokens would still take softmax
   mass.  We (a) zero the padded token states and (b) give every cross-attention block a key mask: the
   blocks are switched to `MaskedCrossAttentionBlock` (a subclass with the same parameters, whose
   forward adds the mask to the scaled-dot-product attention).  The mask travels to those blocks as one
   extra channel appended to the context, ``context = cat([token_states * mask, mask], -1)``, because
   MONAI's UNet forwards the context tensor untouched to every block; no state is kept between calls.
   Result: the output does not depend on how much padding a text has.

2. **Global conditions** -> added to the timestep embedding (SDXL micro-conditioning / MAISI "spacing"
   style).  `DensityTextEmbedding` maps (density, pooled text) to a vector of the time-embedding size.
   It is plugged into MONAI's own class-embedding path: the UNet is built with ``num_class_embeds=1``
   (which makes MONAI's forward compute ``emb = time_embed(t) + class_embedding(class_labels)``) and
   ``class_embedding`` is replaced by `PackedDensityTextEmbedding`, fed ``class_labels =
   cat([density[:, None], pooled], 1)``.  This reuses MONAI's forward unchanged (no copied code); the
   only MONAI internals relied on are the ``class_embedding`` attribute and ``attn2`` of its transformer
   blocks (checked for monai 1.6.1).

Classifier-free guidance conventions (shared with training and the pipeline):
* density ``NaN`` = unknown -> learned null vector (density dropout during training sets NaN);
* "no text" = the text encoder's EMPTY-STRING encoding (``TextEncoder.empty_encoding``), supplied by
  the caller for both token states and pooled vector; the UNet has no learned null text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import CrossAttentionBlock
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetTransformerBlock
from torch import nn

from medgen.models.embeddings import DensityTextEmbedding

__all__ = ["ConditionalUNet", "MaskedCrossAttentionBlock", "PackedDensityTextEmbedding", "pack_context"]


def pack_context(token_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, D), (B, L) -> (B, L, D + 1): padded token states zeroed, mask appended as the last channel."""
    if attention_mask is None:
        attention_mask = torch.ones(token_states.shape[:2], device=token_states.device)
    if attention_mask.shape != token_states.shape[:2]:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} does not match token_states {tuple(token_states.shape)}"
        )
    mask = attention_mask.to(device=token_states.device, dtype=token_states.dtype)[..., None]
    return torch.cat([token_states * mask, mask], dim=-1)


class MaskedCrossAttentionBlock(CrossAttentionBlock):
    """MONAI ``CrossAttentionBlock`` whose context carries a key mask in its last channel (see `pack_context`).

    Same parameters as the parent (``to_q``, ``to_k``, ``to_v``, ``out_proj``), so state dicts are
    interchangeable.  Padded keys get no attention weight; a row without any valid key attends uniformly
    to its (zeroed) token states instead of producing NaNs.
    """

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if context is None:  # self-attention fallback, as in the parent
            return super().forward(x, context)
        kv, key_mask = context[..., :-1], context[..., -1] > 0.5
        key_mask = key_mask | ~key_mask.any(dim=-1, keepdim=True)
        q = self.input_rearrange(self.to_q(x))  # (B, heads, T, d)
        k = self.input_rearrange(self.to_k(kv))
        v = self.input_rearrange(self.to_v(kv))
        if self.attention_dtype is not None:
            q, k, v = (t.to(self.attention_dtype) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_mask[:, None, None, :],
            dropout_p=self.dropout_rate if self.training else 0.0,
            scale=self.scale,
        )
        out = self.out_rearrange(out.to(x.dtype))
        return self.drop_output(self.out_proj(out))


class PackedDensityTextEmbedding(DensityTextEmbedding):
    """`DensityTextEmbedding` that also takes MONAI's single ``class_labels`` tensor.

    ``forward(packed)`` with ``packed = cat([density[:, None], pooled], 1)`` (how MONAI's UNet calls it),
    or ``forward(density, pooled)`` like the parent.
    """

    def forward(self, density: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if pooled is None:
            density, pooled = density[:, 0], density[:, 1:]
        return super().forward(density, pooled)


def _jsonable(v: Any) -> Any:
    return [_jsonable(x) for x in v] if isinstance(v, (list, tuple)) else v


class ConditionalUNet(nn.Module):
    """Latent-diffusion UNet conditioned on report tokens (cross-attention) and density + pooled text (added).

    ``config`` holds the constructor kwargs (JSON-serialisable); rebuild with ``ConditionalUNet(**config)``
    or `ConditionalUNet.from_config`.  The wrapped MONAI network is ``self.unet``.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 3,
        in_channels: int = 4,
        out_channels: int = 4,
        channels: Sequence[int] = (64, 128, 256),
        attention_levels: Sequence[bool] = (False, True, True),
        num_res_blocks: int | Sequence[int] = 1,
        num_head_channels: int | Sequence[int] = 32,
        norm_num_groups: int = 32,
        cross_attention_dim: int,
        pooled_dim: int,
        transformer_num_layers: int = 1,
        layout_channels: int = 0,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "spatial_dims": int(spatial_dims),
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "channels": _jsonable(channels),
            "attention_levels": _jsonable(attention_levels),
            "num_res_blocks": _jsonable(num_res_blocks),
            "num_head_channels": _jsonable(num_head_channels),
            "norm_num_groups": int(norm_num_groups),
            "cross_attention_dim": int(cross_attention_dim),
            "pooled_dim": int(pooled_dim),
            "transformer_num_layers": int(transformer_num_layers),
        }
        if layout_channels:  # only written when used: configs of text-only models stay as they were
            self.config["layout_channels"] = int(layout_channels)
        self.spatial_dims = int(spatial_dims)
        self.cross_attention_dim = int(cross_attention_dim)
        self.pooled_dim = int(pooled_dim)
        self.layout_channels = int(layout_channels)
        self.unet = DiffusionModelUNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels + self.layout_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            attention_levels=tuple(attention_levels),
            num_res_blocks=tuple(num_res_blocks)
            if isinstance(num_res_blocks, (list, tuple))
            else num_res_blocks,
            num_head_channels=(
                tuple(num_head_channels)
                if isinstance(num_head_channels, (list, tuple))
                else num_head_channels
            ),
            norm_num_groups=norm_num_groups,
            with_conditioning=True,
            cross_attention_dim=cross_attention_dim,
            transformer_num_layers=transformer_num_layers,
            num_class_embeds=1,  # enables MONAI's added class-embedding path; the embedding is replaced below
        )
        self.time_embed_dim = int(channels[0]) * 4
        self.unet.class_embedding = PackedDensityTextEmbedding(self.time_embed_dim, self.pooled_dim)
        n_swapped = 0
        for module in self.unet.modules():
            if isinstance(module, DiffusionUNetTransformerBlock):
                if type(module.attn2) is not CrossAttentionBlock:  # pragma: no cover - MONAI changed
                    raise TypeError(f"unexpected cross-attention type {type(module.attn2)}")
                # Same parameters, masked forward (no re-initialisation).
                module.attn2.__class__ = MaskedCrossAttentionBlock
                n_swapped += 1
        self.num_cross_attention_blocks = n_swapped

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ConditionalUNet:
        return cls(**config)

    @property
    def condition_embedding(self) -> DensityTextEmbedding:
        """The density + pooled-text embedding added to the timestep embedding."""
        return self.unet.class_embedding  # type: ignore[return-value]

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        token_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pooled: torch.Tensor,
        density: torch.Tensor | None,
        layout: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the diffusion target (epsilon / v / flow velocity) for latents `x`.

        Args:
            x: (B, C, *S) noisy latents.
            timesteps: (B,) (or scalar) diffusion timesteps.
            token_states: (B, L, cross_attention_dim) text token states (cross-attention context).
            attention_mask: (B, L), 1 = real token, 0 = padding (None: all real).  Padded tokens are ignored.
            pooled: (B, pooled_dim) pooled text vector.
            density: (B,) lesion density in [0, 1], NaN = unknown (None: all unknown).
            layout: (B, layout_channels, *S) layout channels pooled to the latent grid, joined to `x`
                (zeros = no layout); required when the UNet has layout channels.
        """
        b = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(b)
        if density is None:
            density = torch.full((b,), float("nan"), device=x.device)
        density = torch.as_tensor(density, device=x.device, dtype=torch.float32).reshape(-1)
        if density.shape[0] == 1 and b > 1:
            density = density.expand(b)
        if token_states.shape[0] != b or pooled.shape[0] != b or density.shape[0] != b:
            raise ValueError(
                f"batch mismatch: x {b}, token_states {token_states.shape[0]}, pooled {pooled.shape[0]}, density {density.shape[0]}"
            )
        context = pack_context(
            token_states.to(x.device), None if attention_mask is None else attention_mask.to(x.device)
        )
        class_labels = torch.cat([density[:, None], pooled.to(device=x.device, dtype=torch.float32)], dim=1)
        if self.layout_channels:
            if layout is None or layout.shape[0] != b or layout.shape[1] != self.layout_channels:
                got = None if layout is None else tuple(layout.shape)
                raise ValueError(f"this UNet joins {self.layout_channels} layout channels to its input; got {got}")
            x = torch.cat([x, layout.to(device=x.device, dtype=x.dtype)], dim=1)
        elif layout is not None:
            raise ValueError("this UNet has no layout channels (a text-only model); do not pass `layout`")
        return self.unet(x, timesteps, context=context, class_labels=class_labels)
