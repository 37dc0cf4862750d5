"""`ReportReader`: reads a free-text EN/ZH chest CT report into typed `Findings` with two readers combined.

1. A learned tagger: a BERT-family text encoder with a token-tagging head. Every token gets a multi-label tag
   (`medgen.reader.labels`: lesion / effusion / emphysema mentions with their assertion — affirmed, negated,
   hedged, restated — and the size, lobe, type, margin, side, grade and distribution words); `medgen.reader.decode`
   cuts the tags into spans. Reports longer than one window are read in overlapping windows (each token is taken
   from the window in which it sits farthest from an edge), never truncated.
2. Rules (`medgen.reader.grammar`): the field's ConText assertion (negated / possible / historical / hypothetical)
   and sections, a size and site grammar, as data files in `medgen/reader/rules/`.
3. `medgen.reader.combine` joins the two span lists by agreement and confidence, `medgen.reader.assemble` groups
   the spans into findings, and each finding keeps the words it came from (`ReadResult.details`).

`read_batch(texts, mode=...)` also reads with one reader alone ("tagger": the learned reader as it was before the
rules; "rules"), for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.findings import SCHEMA_VERSION, Findings
from medgen.io.weights import PretrainedMixin, cast_safetensors, save_weights
from medgen.reader.assemble import assemble
from medgen.reader.combine import combine_findings, explain, mark_agreement
from medgen.reader.decode import TaggedSpan, decode_spans
from medgen.reader.grammar import read_rules
from medgen.reader.labels import LABELS

CONFIG_NAME = "reader_config.json"
HEAD_NAME = "head.safetensors"
UNKNOWN_WARN_FRACTION = 0.2
MODES = ("combined", "tagger", "rules")
SMALL_BATCH_TOKENS = 4096  # below this many tokens a batch is tagged on one CPU thread (thread start-up dominates)


class ReaderWarning(UserWarning):
    """The reader could not use part of a report (nothing recognised, a lesion without a lobe, ...)."""


@dataclass
class ReadResult:
    """What the reader read: findings, the tagged spans they came from, and warnings."""

    findings: Findings
    spans: list[TaggedSpan]
    warnings: list[str] = field(default_factory=list)
    n_windows: int = 1
    details: list[dict] = field(default_factory=list)  # per finding: certainty, cues, the words it was read from
    language: str | None = None  # "en", "zh", or None when the rules could not tell
    disagreements: list[dict] = field(default_factory=list)  # words the tagger and the rules read differently

    def to_dict(self) -> dict:
        return {"findings": self.findings.to_dict(), "warnings": list(self.warnings), "language": self.language,
                "explain": self.details, "disagreements": self.disagreements, "n_windows": self.n_windows,
                "spans": [s.to_dict() for s in self.spans]}


class ReportReader(PretrainedMixin, torch.nn.Module):
    """Report text -> `Findings`.

    Args:
        encoder: a Hugging Face BERT-family model (`AutoModel`).
        tokenizer: its fast tokenizer (offsets are needed).
        window: tokens per window including [CLS]/[SEP] (at most the model's position limit).
        stride: tokens between window starts when a report needs several windows.
    """

    config_name = CONFIG_NAME

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

    # `save_pretrained` / `from_pretrained` (`PretrainedMixin`): encoder + tokenizer in `encoder/`, the head
    # weights in head.safetensors, reader_config.json (tag set, window, stride, the weights' sha256)
    def _save_files(self, folder: Path, dtype: torch.dtype | None) -> dict:
        self.encoder.save_pretrained(folder / "encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(folder / "encoder")
        if dtype is not None:
            cast_safetensors(folder / "encoder", dtype)
        save_weights(self.head, folder / HEAD_NAME, dtype or torch.float32)
        return {"labels": list(LABELS), "window": self.window, "stride": self.stride,
                "findings_schema_version": SCHEMA_VERSION}

    @classmethod
    def _not_found(cls, folder: Path) -> Exception:
        return ModelNotFoundError(f"no report reader at {folder} (no {CONFIG_NAME}); train one with "
                                  "`medgen train reader --out DIR` or pass the folder of a saved reader")

    @classmethod
    def _check_config(cls, folder: Path, config: dict) -> None:
        if tuple(config.get("labels", ())) != LABELS:
            raise InputFileError(folder / CONFIG_NAME, "the reader was trained with another tag set than this "
                                                       "medgen version reads; retrain it")

    @classmethod
    def _from_files(cls, folder: Path, config: dict) -> ReportReader:
        from medgen.text.hub import load_hf_encoder

        tokenizer, encoder = load_hf_encoder(str(folder / "encoder"), None)
        reader = cls(encoder, tokenizer, window=config["window"], stride=config["stride"])
        try:
            reader.head.load_state_dict(load_file(str(folder / HEAD_NAME)))
        except Exception as err:  # missing, truncated or mismatched weights
            raise InputFileError(folder / HEAD_NAME, f"cannot load the reader head ({type(err).__name__}: {err})") \
                from None
        return reader.float().eval()  # weights may be stored in float16

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
        threads = torch.get_num_threads()
        if device.type == "cpu" and int(mask.sum()) <= SMALL_BATCH_TOKENS:
            torch.set_num_threads(1)  # a few short reports: one thread is faster than waking a pool
        try:
            probs = torch.sigmoid(self(input_ids.to(device), mask.to(device))).float().cpu().numpy()
        finally:
            torch.set_num_threads(threads)
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
    def read(self, text: str, mode: str = "combined") -> ReadResult:
        """Read one report (see `read_batch`)."""
        return self.read_batch([text], mode=mode)[0]

    def read_batch(self, texts: list[str], mode: str = "combined") -> list[ReadResult]:
        """Read reports into findings.

        Args:
            mode: "combined" (the tagger and the rules), or one reader alone: "tagger" or "rules".

        Raises:
            ValueError: a report that is not a non-empty string, or an unknown mode.
        """
        if not texts:
            raise ValueError("`texts` is empty: give at least one report")
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"report {i} must be a non-empty string, got {text!r}")
        if mode == "rules":
            return [self._result(text, None, [], 0, [], mode) for text in texts]
        if not self.training:  # toggling walks every submodule: only when needed
            tagged = self._tag(list(texts))
        else:
            self.eval()
            try:
                tagged = self._tag(list(texts))
            finally:
                self.train(True)
        return [self._result(text, *t, mode) for text, t in zip(texts, tagged, strict=True)]

    def _result(self, text: str, probs, offsets, n_windows: int, ids: list[int], mode: str) -> ReadResult:
        tagged = decode_spans(text, probs, offsets) if probs is not None else []
        rules = read_rules(text) if mode != "tagger" else None
        disagreements: list[dict] = []
        trace: dict = {}
        if rules is None or rules.language is None or mode == "rules":
            spans = tagged if rules is None or (rules.language is None and mode != "rules") else list(rules.spans)
            findings, warnings = assemble(text, spans, trace)
        else:
            findings, warnings, trace, disagreements = combine_findings(text, tagged, rules)
            marked = mark_agreement(rules.spans, tagged)
            spans = marked + [t for t in tagged if not any(r.group == t.group and r.start < t.end and t.start < r.end
                                                           for r in marked)]
            spans.sort(key=lambda s: (s.start, s.group))
        unk = self.tokenizer.unk_token_id  # one lookup: a tokenizer attribute is slow to reach
        unknown = sum(i == unk for i in ids) / max(len(ids), 1)
        if unknown > UNKNOWN_WARN_FRACTION:
            warnings.append(f"{unknown:.0%} of the report's tokens are unknown to the reader's vocabulary "
                            "(another language or script?)")
        if rules is not None and rules.language is None:
            warnings.append("the report does not read as English or Chinese, the languages the reader's rules know"
                            + ("; only the learned tagger read it: check the findings" if mode != "rules" else ""))
        elif rules is not None and not rules.chest:
            warnings.append("the report names no chest structure or finding (lung, pleura, nodule, effusion, ...): "
                            "is it a chest CT report? It was read as normal" if findings.is_normal else
                            "the report names no chest structure (lung, pleura, ...): is it a chest CT report?")
        if not spans:
            warnings.append("the reader found nothing it knows in this report (no finding, negation or "
                            "normal-study statement): is it a chest CT report in English or Chinese? "
                            "It was read as normal")
        details = explain(findings, trace, rules) if rules is not None else []
        return ReadResult(findings, spans, warnings, n_windows, details, rules.language if rules else None,
                          disagreements)
