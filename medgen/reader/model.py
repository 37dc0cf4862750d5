"""`ReportReader`: a BERT-family text encoder with a token-tagging head that reads a free-text EN/ZH chest
CT report into typed `Findings`.

Design (measured against the rule parser in `medgen evaluate`'s reader section): every token gets a
multi-label tag (`medgen.reader.labels`: lesion / effusion / emphysema mentions with their assertion —
affirmed, negated, hedged — and the size, lobe, type, margin, side, grade and distribution words), so
negation, hedging, corrections and a lobe named under a 'LEFT LUNG:' heading are decided by the encoder
from context; `medgen.reader.decode` cuts the tags into spans, `medgen.reader.assemble` groups the spans into
findings and `medgen.reader.sizes` spells the size spans out in millimetres.

Reports longer than one window are read in overlapping windows (each token is taken from the window in
which it sits farthest from an edge), never truncated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.findings import SCHEMA_VERSION, Findings
from medgen.reader.assemble import assemble
from medgen.reader.decode import TaggedSpan, decode_spans
from medgen.reader.labels import LABELS

CONFIG_NAME = "reader_config.json"
HEAD_NAME = "head.safetensors"
UNKNOWN_WARN_FRACTION = 0.2


class ReaderWarning(UserWarning):
    """The reader could not use part of a report (nothing recognised, a lesion without a lobe, ...)."""


@dataclass
class ReadResult:
    """What the reader read: findings, the tagged spans they came from, and warnings."""

    findings: Findings
    spans: list[TaggedSpan]
    warnings: list[str] = field(default_factory=list)
    n_windows: int = 1

    def to_dict(self) -> dict:
        return {"findings": self.findings.to_dict(), "warnings": list(self.warnings), "n_windows": self.n_windows,
                "spans": [s.to_dict() for s in self.spans]}


class ReportReader(torch.nn.Module):
    """Report text -> `Findings`.

    Args:
        encoder: a Hugging Face BERT-family model (`AutoModel`).
        tokenizer: its fast tokenizer (offsets are needed).
        window: tokens per window including [CLS]/[SEP] (at most the model's position limit).
        stride: tokens between window starts when a report needs several windows.
    """

    def __init__(self, encoder, tokenizer, *, window: int | None = None, stride: int | None = None):
        super().__init__()
        limit = int(getattr(encoder.config, "max_position_embeddings", 512))
        window = min(limit, 256) if window is None else int(window)
        if not 8 <= window <= limit:
            raise ValueError(f"`window` must be in [8, {limit}] for this encoder, got {window}")
        stride = (window - 2) // 2 if stride is None else int(stride)
        if not 1 <= stride <= window - 2:
            raise ValueError(f"`stride` must be in [1, {window - 2}], got {stride}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("the reader needs a fast tokenizer (character offsets)")
        self.encoder, self.tokenizer = encoder, tokenizer
        self.window, self.stride = window, stride
        self.head = torch.nn.Linear(int(encoder.config.hidden_size), len(LABELS))
        torch.nn.init.constant_(self.head.bias, -4.0)  # tags are rare: start near their prior

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def from_text_encoder(cls, name_or_path, **kwargs) -> ReportReader:
        """A new reader (untrained head) on a text encoder folder or cached hub id (offline)."""
        from medgen.text.hub import load_hf_encoder

        tokenizer, encoder = load_hf_encoder(str(name_or_path), None)
        return cls(encoder, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, path) -> ReportReader:
        """Load a reader saved by `save_pretrained` (safetensors only; nothing is unpickled)."""
        from medgen.text.hub import load_hf_encoder

        folder = Path(path).expanduser()
        if not (folder / CONFIG_NAME).is_file():
            raise ModelNotFoundError(f"no report reader at {folder} (no {CONFIG_NAME}); train one with "
                                     "`medgen train reader --out DIR` or pass the folder of a saved reader")
        try:
            config = json.loads((folder / CONFIG_NAME).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputFileError(folder / CONFIG_NAME, f"cannot read the reader config ({err})") from None
        if tuple(config.get("labels", ())) != LABELS:
            raise InputFileError(folder / CONFIG_NAME, "the reader was trained with another tag set than this "
                                                       "medgen version reads; retrain it")
        tokenizer, encoder = load_hf_encoder(str(folder / "encoder"), None)
        reader = cls(encoder, tokenizer, window=config["window"], stride=config["stride"])
        try:
            reader.head.load_state_dict(load_file(str(folder / HEAD_NAME)))
        except Exception as err:  # missing, truncated or mismatched weights
            raise InputFileError(folder / HEAD_NAME, f"cannot load the reader head ({type(err).__name__}: {err})") \
                from None
        return reader.float().eval()  # weights may be stored in float16

    def save_pretrained(self, path) -> Path:
        """Write encoder + tokenizer (subfolder `encoder/`), head weights and `reader_config.json` atomically."""
        from medgen.io.atomic import atomic_dir

        with atomic_dir(path, overwrite=True) as tmp:
            self.encoder.save_pretrained(tmp / "encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(tmp / "encoder")
            save_file({k: v.detach().float().contiguous().cpu() for k, v in self.head.state_dict().items()},
                      str(tmp / HEAD_NAME))
            config = {"labels": list(LABELS), "window": self.window, "stride": self.stride,
                      "findings_schema_version": SCHEMA_VERSION}
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        return Path(path)

    # ------------------------------------------------------------------------------------ tagging
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Tag logits (B, L, len(LABELS)) for token ids (B, L) with their mask (B, L)."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(states)

    def tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of the whole report (no special tokens, no truncation)."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                                 verbose=False)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]

    def windows(self, n_tokens: int) -> list[tuple[int, int]]:
        """[start, end) token ranges covering `n_tokens` with overlap."""
        size = self.window - 2
        if n_tokens <= size:
            return [(0, n_tokens)]
        starts = list(range(0, n_tokens - size, self.stride)) + [n_tokens - size]
        return [(s, s + size) for s in sorted(set(starts))]

    def wrap(self, ids: list[int]) -> list[int]:
        return [self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id]

    def tag(self, texts: list[str]) -> list[tuple[np.ndarray, list[tuple[int, int]], int]]:
        """Per-token label probabilities, offsets and window count for each report."""
        return [(probs, offsets, n) for probs, offsets, n, _ in self._tag(texts)]

    @torch.no_grad()
    def _tag(self, texts: list[str]):
        """`tag` plus each report's token ids (the reader counts unknown tokens in them)."""
        tokenized = [self.tokenize(t) for t in texts]
        pieces, owners = [], []
        for i, (ids, _) in enumerate(tokenized):
            for start, end in self.windows(len(ids)):
                pieces.append(self.wrap(ids[start:end]))
                owners.append((i, start, end))
        device = next(self.parameters()).device
        length = max(len(p) for p in pieces)
        input_ids = torch.full((len(pieces), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(pieces), length), dtype=torch.long)
        for row, piece in enumerate(pieces):
            input_ids[row, :len(piece)] = torch.tensor(piece)
            mask[row, :len(piece)] = 1
        probs = torch.sigmoid(self(input_ids.to(device), mask.to(device))).float().cpu().numpy()
        out = []
        for i, (ids, offsets) in enumerate(tokenized):
            merged = np.zeros((len(ids), len(LABELS)), dtype=np.float32)
            best = np.full(len(ids), -1)
            rows = [(row, s, e) for row, (owner, s, e) in enumerate(owners) if owner == i]
            for row, start, end in rows:
                for t in range(start, end):
                    margin = min(t - start, end - 1 - t)
                    if margin > best[t]:
                        best[t], merged[t] = margin, probs[row, 1 + t - start]
            out.append((merged, offsets, len(rows), ids))
        return out

    # ------------------------------------------------------------------------------------ reading
    def read(self, text: str) -> ReadResult:
        """Read one report (see `read_batch`)."""
        return self.read_batch([text])[0]

    def read_batch(self, texts: list[str]) -> list[ReadResult]:
        """Read reports into findings.

        Raises:
            ValueError: a report that is not a non-empty string.
        """
        if not texts:
            raise ValueError("`texts` is empty: give at least one report")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"report {i} must be a non-empty string, got {text!r}")
        was_training = self.training
        self.eval()
        try:
            tagged = self._tag(list(texts))
        finally:
            self.train(was_training)
        return [self._result(text, *t) for text, t in zip(texts, tagged, strict=True)]

    def _result(self, text: str, probs: np.ndarray, offsets, n_windows: int, ids: list[int]) -> ReadResult:
        spans = decode_spans(text, probs, offsets)
        findings, warnings = assemble(text, spans)
        unknown = sum(i == self.tokenizer.unk_token_id for i in ids) / max(len(ids), 1)
        if unknown > UNKNOWN_WARN_FRACTION:
            warnings.append(f"{unknown:.0%} of the report's tokens are unknown to the reader's vocabulary "
                            "(another language or script?)")
        if not spans:
            warnings.append("the reader found nothing it knows in this report (no finding, negation or "
                            "normal-study statement): is it a chest CT report in English or Chinese? "
                            "It was read as normal")
        return ReadResult(findings, spans, warnings, n_windows)
