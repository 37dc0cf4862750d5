"""Report text -> token states (B, L, D) + pooled vector (B, D) with a Hugging Face encoder.

Loading never touches the network (see `medgen.text.hub`): a local folder or a model id already in the
Hugging Face cache; a missing model raises `ModelNotFoundError` with one sentence saying where it looked
and how to get it. Frozen encoders cache embeddings of repeated reports (LRU, keyed by the text).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import OrderedDict, namedtuple
from dataclasses import dataclass
from pathlib import Path

import torch

from medgen.errors import InputFileError
from medgen.io.weights import CHECKSUMS_KEY, PretrainedMixin, cast_safetensors, verify_checksums
from medgen.text.hub import DEFAULT_TEXT_ENCODER, load_hf_encoder

CONFIG_NAME = "medgen_text.json"
POOLINGS = ("mean", "cls")

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "size", "maxsize"])


@dataclass
class TextEncoding:
    """Encoded reports.

    Args:
        token_states: (B, L, D) float; zero at padded positions.
        attention_mask: (B, L) long, 1 = real token, 0 = padding.
        pooled: (B, D) one vector per report.
    """

    token_states: torch.Tensor
    attention_mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.token_states.shape[0]

    def to(self, *args, **kwargs) -> TextEncoding:
        """`Tensor.to` on the float tensors (dtype/device); the mask only changes device."""
        states = self.token_states.to(*args, **kwargs)
        return TextEncoding(states, self.attention_mask.to(states.device), self.pooled.to(*args, **kwargs))

    def pad_to(self, length: int) -> TextEncoding:
        """Pad the token axis with zero states and mask 0 up to `length` (>= current L)."""
        current = self.token_states.shape[1]
        if length < current:
            raise ValueError(f"`length` must be >= the current length {current}, got {length}")
        if length == current:
            return self
        extra = length - current
        states = torch.nn.functional.pad(self.token_states, (0, 0, 0, extra))
        mask = torch.nn.functional.pad(self.attention_mask, (0, extra))
        return TextEncoding(states, mask, self.pooled)

    @classmethod
    def cat(cls, encodings: list[TextEncoding]) -> TextEncoding:
        """Concatenate along the batch axis, padding to the longest L (e.g. conditional + null for guidance)."""
        length = max(e.token_states.shape[1] for e in encodings)
        padded = [e.pad_to(length) for e in encodings]
        return cls(
            torch.cat([e.token_states for e in padded]),
            torch.cat([e.attention_mask for e in padded]),
            torch.cat([e.pooled for e in padded]),
        )


def _transformer_layers(model) -> torch.nn.ModuleList:
    """The stack of transformer blocks of a BERT-like encoder."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise TypeError(f"cannot find the transformer layers of {type(model).__name__} to make trainable")


class TextEncoder(PretrainedMixin, torch.nn.Module):
    """A Hugging Face encoder with pooling, truncation warnings and an embedding cache.

    Saved (`save_pretrained`) as the Hugging Face folder (config.json, model.safetensors, tokenizer) plus
    ``medgen_text.json`` (max_length, pooling, cache_size, the weights' sha256); `from_pretrained` also reads
    a plain Hugging Face folder or a model id in the Hugging Face cache.

    Args:
        model: a transformers encoder (e.g. `BertModel`) returning `last_hidden_state`.
        tokenizer: its tokenizer.
        max_length: longest token sequence (with [CLS]/[SEP]); longer reports are truncated with a warning.
        pooling: "mean" (over real tokens, the attention mask respected) or "cls" (the first token's state).
        trainable_layers: 0 = frozen; n = the top n transformer layers trainable.
        cache_size: number of reports whose encodings are kept (LRU) while frozen; 0 disables the cache.
    """

    config_name = CONFIG_NAME

    def __init__(self, model, tokenizer, *, max_length: int = 128, pooling: str = "mean",
                 trainable_layers: int = 0, cache_size: int = 2048):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}")
        limit = getattr(model.config, "max_position_embeddings", None)
        if not 2 <= max_length <= (limit or max_length):
            raise ValueError(f"`max_length` must be in [2, {limit}] for this model, got {max_length}")
        if cache_size < 0:
            raise ValueError(f"`cache_size` must be >= 0, got {cache_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.pooling = pooling
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor, int]] = OrderedDict()
        self._hits = self._misses = 0
        self.trainable_layers = 0
        self.set_trainable_layers(trainable_layers)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_TEXT_ENCODER, *, max_length: int | None = None,
                        pooling: str | None = None, trainable_layers: int | None = None,
                        cache_size: int | None = None, do_lower_case: bool | None = None) -> TextEncoder:
        """Load offline from a folder or the HF cache.

        Options left as None come from the folder's `medgen_text.json` (written by `save_pretrained`:
        max_length, pooling, cache_size), else the defaults: max_length=128, pooling="mean",
        trainable_layers=0 (frozen), cache_size=2048.
        `do_lower_case=None` keeps the tokenizer's own setting, except for Bio_ClinicalBERT (cased: False).
        """
        name = str(name_or_path)
        folder = Path(name).expanduser()
        saved = read_encoder_config(folder)
        recorded = saved.pop(CHECKSUMS_KEY, None)
        if recorded is not None:
            verify_checksums(folder, recorded, CONFIG_NAME)
        tokenizer, model = load_hf_encoder(name, do_lower_case)
        options = {"max_length": 128, "pooling": "mean", "trainable_layers": 0, "cache_size": 2048}
        options.update({k: saved[k] for k in options if k in saved})
        given = {"max_length": max_length, "pooling": pooling, "trainable_layers": trainable_layers,
                 "cache_size": cache_size}
        options.update({k: v for k, v in given.items() if v is not None})
        return cls(model, tokenizer, **options)

    def _save_files(self, folder: Path, dtype: torch.dtype | None, extra: dict | None = None) -> dict:
        """`save_pretrained(path, extra=...)`: tokenizer + model (safetensors) here, the options in
        `medgen_text.json` with the entries of `extra` (e.g. a training record)."""
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        if dtype is not None:
            cast_safetensors(folder, dtype)
        # trainable_layers is a training choice, not saved: a loaded encoder starts frozen
        return {"max_length": self.max_length, "pooling": self.pooling, "cache_size": self.cache_size,
                "hidden_size": self.hidden_size, **(extra or {})}

    # ----------------------------------------------------------------------------------- properties
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.model.parameters())

    # ------------------------------------------------------------------------------------- training
    def set_trainable_layers(self, n: int) -> None:
        """Freeze everything, then unfreeze the top `n` transformer layers (0 = fully frozen).

        The pooler of BERT models stays frozen: neither pooling mode uses it (an unused trainable
        parameter would also break DistributedDataParallel).
        """
        layers = _transformer_layers(self.model)
        if not 0 <= n <= len(layers):
            raise ValueError(f"`trainable_layers` must be in [0, {len(layers)}], got {n}")
        self.model.requires_grad_(False)
        for layer in layers[len(layers) - n:] if n else []:
            layer.requires_grad_(True)
        self.trainable_layers = int(n)
        self.clear_cache()
        self.train(self.training)

    def train(self, mode: bool = True):
        """A frozen encoder always runs in eval mode (no dropout), so its outputs are deterministic."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # ---------------------------------------------------------------------------------------- cache
    def cache_info(self) -> CacheInfo:
        return CacheInfo(self._hits, self._misses, len(self._cache), self.cache_size)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._hits = self._misses = 0

    def _apply(self, fn, *args, **kwargs):  # .to() / .cuda() / .half(): cached tensors would be stale
        self.clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self.clear_cache()
        return super().load_state_dict(*args, **kwargs)

    # -------------------------------------------------------------------------------------- encoding
    def forward(self, texts: list[str]) -> TextEncoding:
        """Tokenize and encode reports.

        Reports longer than `max_length` tokens are truncated (one `UserWarning` per call, naming the
        longest token count). With a frozen encoder, repeated reports come from the cache.

        Args:
            texts: B report strings ("" is the null text).
        Returns:
            TextEncoding with token_states (B, L, D), attention_mask (B, L), pooled (B, D) on the module's
            device; L is the longest report in the batch (after truncation).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"`texts[{i}]` must be a str, got {type(text).__name__}")
        if not texts:
            raise ValueError("`texts` is empty")
        use_cache = self.cache_size > 0 and self.frozen
        if not use_cache:
            states, mask, pooled, lengths = self._encode(texts)
            self._warn_truncated(lengths)
            return TextEncoding(states, mask, pooled)

        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self._misses += len(todo)
        self._hits += len(texts) - len(todo)
        if todo:
            states, mask, pooled, lengths = self._encode(todo)
            for j, text in enumerate(todo):
                n = int(mask[j].sum())
                self._cache[text] = (states[j, :n].clone(), pooled[j].clone(), lengths[j])  # not views of the batch
        entries = []
        for text in texts:
            self._cache.move_to_end(text)
            entries.append(self._cache[text])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._warn_truncated([e[2] for e in entries])
        return self._assemble(entries)

    def empty_encoding(self, batch: int) -> TextEncoding:
        """The null-text encoding (the encoding of ""), repeated `batch` times, for classifier-free guidance."""
        null = self([""])
        return TextEncoding(null.token_states.expand(batch, -1, -1).contiguous(),
                            null.attention_mask.expand(batch, -1).contiguous(),
                            null.pooled.expand(batch, -1).contiguous())

    def _encode(self, texts: list[str]):
        """Run tokenizer + model; return states (zero at padding), mask, pooled and untruncated lengths."""
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        batch = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        device = self.device
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            states = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].long()
        states = states * mask.unsqueeze(-1).to(states.dtype)
        return states, mask, self._pool(states, mask), lengths

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return states[:, 0]
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def _assemble(self, entries) -> TextEncoding:
        """Pad cached per-report states (L_i, D) into a batch (new tensors: callers may modify them)."""
        length = max(e[0].shape[0] for e in entries)
        first = entries[0][0]
        states = first.new_zeros(len(entries), length, first.shape[-1])
        mask = torch.zeros(len(entries), length, dtype=torch.long, device=first.device)
        for i, (s, _, _) in enumerate(entries):
            states[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1
        return TextEncoding(states, mask, torch.stack([e[1] for e in entries]))

    def _warn_truncated(self, lengths: list[int]) -> None:
        longest = max(lengths)
        if longest > self.max_length:
            count = sum(n > self.max_length for n in lengths)
            warnings.warn(
                f"{count} of {len(lengths)} reports are longer than max_length={self.max_length} tokens "
                f"(longest: {longest} tokens) and were truncated; raise `max_length` (the model accepts up to "
                f"{getattr(self.model.config, 'max_position_embeddings', '?')}) or shorten the reports",
                UserWarning, stacklevel=_caller_stacklevel(),
            )


def _caller_stacklevel() -> int:
    """Stack level of the first frame outside medgen.text and torch.nn (where the user called the encoder)."""
    skip = (os.path.dirname(__file__), os.path.dirname(torch.nn.modules.module.__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


def read_encoder_config(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputFileError(path, f"invalid JSON ({err})") from err
