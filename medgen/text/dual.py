"""Two text encoders side by side (SDXL-style): token states and pooled vectors concatenated on features."""

from __future__ import annotations

from pathlib import Path

import torch

from medgen.io.weights import PretrainedMixin
from medgen.text.encoder import CONFIG_NAME, CacheInfo, TextEncoder, TextEncoding


class DualTextEncoder(PretrainedMixin, torch.nn.Module):
    """Same interface as `TextEncoder`; `hidden_size` = first.hidden_size + second.hidden_size.

    Both encodings are padded to a common L; a position is real (mask 1) if it is real in either encoder
    (the states of the shorter one are zero there). Saved as `first/`, `second/` and ``medgen_text.json``
    (``{"dual": true, ...}``).
    """

    config_name = CONFIG_NAME

    def __init__(self, first: TextEncoder, second: TextEncoder):
        super().__init__()
        self.first = first
        self.second = second

    @property
    def encoders(self) -> tuple[TextEncoder, TextEncoder]:
        return self.first, self.second

    @property
    def hidden_size(self) -> int:
        return self.first.hidden_size + self.second.hidden_size

    @property
    def max_length(self) -> int:
        return max(self.first.max_length, self.second.max_length)

    # ---------------------------------------------------------------------------------- persistence
    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        """`save_pretrained`: `first/`, `second/` (each a `TextEncoder` folder) and `medgen_text.json`."""
        self.first.save_pretrained(folder / "first", dtype=dtype)
        self.second.save_pretrained(folder / "second", dtype=dtype)
        return {"dual": True, "hidden_size": self.hidden_size}

    @classmethod
    def _from_files(cls, folder: Path, config: dict, **kwargs) -> DualTextEncoder:
        """`from_pretrained(path, **kwargs)`: kwargs (max_length, pooling, ...) go to both encoders."""
        return cls(*(TextEncoder.from_pretrained(str(folder / sub), **kwargs) for sub in ("first", "second")))

    def set_trainable_layers(self, n: int) -> None:
        """The top `n` layers of each encoder become trainable (0 = both frozen)."""
        for encoder in self.encoders:
            encoder.set_trainable_layers(n)

    def cache_info(self) -> CacheInfo:
        a, b = self.first.cache_info(), self.second.cache_info()
        return CacheInfo(*(x + y for x, y in zip(a, b, strict=True)))

    def clear_cache(self) -> None:
        for encoder in self.encoders:
            encoder.clear_cache()

    def forward(self, texts: list[str]) -> TextEncoding:
        """Encode with both; token_states (B, L, D1 + D2), attention_mask (B, L), pooled (B, D1 + D2)."""
        return self._combine(self.first(texts), self.second(texts))

    def empty_encoding(self, batch: int) -> TextEncoding:
        return self._combine(self.first.empty_encoding(batch), self.second.empty_encoding(batch))

    @staticmethod
    def _combine(a: TextEncoding, b: TextEncoding) -> TextEncoding:
        length = max(a.token_states.shape[1], b.token_states.shape[1])
        a, b = a.pad_to(length), b.pad_to(length)
        return TextEncoding(
            torch.cat([a.token_states, b.token_states.to(a.token_states)], dim=-1),
            torch.maximum(a.attention_mask, b.attention_mask.to(a.attention_mask.device)),
            torch.cat([a.pooled, b.pooled.to(a.pooled)], dim=-1),
        )
