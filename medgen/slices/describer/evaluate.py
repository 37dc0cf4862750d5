"""Scoring the slice reader on held-out real phantom slices, attribute by attribute, per language.

Attributes (bars of issue 11): lesion presence (all slices), side, lobe, size within +-30 % and type (slices
that show a lesion, scored on the largest one), effusion (all slices: none / right / left / bilateral).
"""

from __future__ import annotations

import numpy as np

from medgen.slices.describer.model import SliceReader
from medgen.slices.describer.questions import KEYS, QUESTIONS, findings_from_answers

BARS = {"presence": 0.95, "side": 0.95, "lobe": 0.85, "size": 0.80, "type": 0.85, "effusion": 0.90}


def score_answers(truth: dict, read: dict) -> dict:
    """Per-attribute correctness (None = not applicable) of parsed answers against a slice findings dict."""
    top = truth["lesions"][0] if truth["lesions"] else None
    out = {"presence": read["lesion"] == (top is not None), "effusion": read["effusion"] == truth.get("effusion")}
    for key in ("side", "lobe", "type"):
        out[key] = None if top is None else read[key] == top[key]
    out["size"] = None if top is None else (
        read["size_mm"] is not None and abs(read["size_mm"] - top["size_mm"]) <= 0.3 * top["size_mm"])
    return out


def evaluate_slice_reader(reader: SliceReader, hu_slices, findings: list[dict], *, batch_size: int = 32) -> dict:
    """{language: {attribute: accuracy, "n_lesion": ..., "n": ...}} plus "bars"."""
    out = {}
    for language in ("en", "zh"):
        questions = [QUESTIONS[language][k] for k in KEYS]
        rows = []
        for start in range(0, len(hu_slices), batch_size):
            replies = reader.read(hu_slices[start:start + batch_size], questions)
            for truth, reply in zip(findings[start:start + batch_size], replies, strict=True):
                rows.append(score_answers(truth, findings_from_answers(dict(zip(KEYS, reply, strict=True)), language)))
        out[language] = {key: float(np.mean([r[key] for r in rows if r[key] is not None]))
                         if any(r[key] is not None for r in rows) else None for key in BARS}
        out[language]["n"] = len(rows)
        out[language]["n_lesion"] = sum(r["side"] is not None for r in rows)
    out["bars"] = {f"{language}_{key}": {"bar": bar, "value": out[language][key],
                                         "pass": out[language][key] is not None and out[language][key] >= bar}
                   for language in ("en", "zh") for key, bar in BARS.items()}
    return out
