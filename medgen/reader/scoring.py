"""Score a report reader (learned, or the rule parser as a baseline) against the findings a report was
written from: exact agreement per attribute, size within ±2 mm, and whole-report correctness.

Attributes: lesion presence (any lesion or none), lesion count, per written lesion side / lobe / type /
size (matched to a read lesion by lobe, then size; a lesion not read counts wrong on each), certainty,
effusion (side and grade, 'none' included), emphysema (grade and distribution, 'none' included) and normal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from medgen.findings import Findings

LESION_ATTRIBUTES = ("side", "lobe", "type", "size", "certainty")
REPORT_ATTRIBUTES = ("presence", "count", "effusion_side", "effusion_grade", "emphysema", "emphysema_dist",
                     "normal")
SIZE_TOLERANCE_MM = 2.0


def _pairs(truth, read):
    if not truth or not read:
        return []
    cost = np.array([[(t.lobe != r.lobe) * 1000 + (t.side != r.side) * 1000 + abs(t.diameter_mm - r.diameter_mm)
                      for r in read] for t in truth])
    rows, cols = linear_sum_assignment(cost)
    return [(truth[i], read[j]) for i, j in zip(rows, cols, strict=True)]


def compare(truth: Findings, read: Findings) -> dict[str, list[bool]]:
    """Per-attribute hits of one report (lists: one entry per written lesion for lesion attributes)."""
    e_t, e_r, x_t, x_r = truth.effusion, read.effusion, truth.emphysema, read.emphysema
    hits = {
        "presence": [bool(truth.lesions) == bool(read.lesions)],
        "count": [len(truth.lesions) == len(read.lesions)],
        "effusion_side": [(e_t and e_t.side) == (e_r and e_r.side)],
        "effusion_grade": [(e_t and e_t.grade) == (e_r and e_r.grade)],
        "emphysema": [(x_t and x_t.grade) == (x_r and x_r.grade)],
        "emphysema_dist": [(x_t and x_t.distribution) == (x_r and x_r.distribution)],
        "normal": [truth.is_normal == read.is_normal],
    }
    matched = {id(t): r for t, r in _pairs(truth.lesions, read.lesions)}
    for name in LESION_ATTRIBUTES:
        hits[name] = []
    for t in truth.lesions:
        r = matched.get(id(t))
        hits["side"].append(r is not None and r.side == t.side)
        hits["lobe"].append(r is not None and r.lobe == t.lobe)
        hits["type"].append(r is not None and r.type == t.type)
        hits["size"].append(r is not None and abs(round(t.diameter_mm) - r.diameter_mm) <= SIZE_TOLERANCE_MM)
        hits["certainty"].append(r is not None and r.certainty == t.certainty)
    for item_t, item_r in ((e_t, e_r), (x_t, x_r)):
        if item_t is not None:
            hits["certainty"].append(item_r is not None and item_r.certainty == item_t.certainty)
    return hits


def score(pairs: list[tuple[Findings, Findings]], groups: list[str] | None = None) -> dict:
    """Accuracy per attribute and per-report all-correct, overall and per group (language, family)."""
    buckets: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for i, (truth, read) in enumerate(pairs):
        hits = compare(truth, read)
        keys = ["overall"] + ([groups[i]] if groups else [])
        for key in keys:
            for name, values in hits.items():
                buckets[key][name].extend(values)
            buckets[key]["all_correct"].append(all(all(v) for v in hits.values()))
    return {key: {name: {"accuracy": float(np.mean(v)) if v else None, "n": len(v)} for name, v in b.items()}
            for key, b in buckets.items()}


def read_findings(reader_or_fn, texts: list[str], batch_size: int = 32) -> list[Findings]:
    """Findings of each text by a `ReportReader` (or any ``texts -> list[Findings]`` callable)."""
    read_fn: Callable = getattr(reader_or_fn, "read_batch", None) or reader_or_fn
    read = []
    for i in range(0, len(texts), batch_size):
        read += [r.findings if hasattr(r, "findings") else r for r in read_fn(texts[i:i + batch_size])]
    return read


def score_reader(reader_or_fn, examples, *, by: str | None = None, read: list[Findings] | None = None) -> dict:
    """Score a `ReportReader` (or any ``texts -> list[Findings]`` callable) on writer examples.

    Args:
        by: None, "language" or "family": the extra grouping of the result.
        read: the findings already read from the examples' texts (skips reading them again).
    """
    examples = [ex for ex in examples if ex.findings is not None]
    if read is None:
        read = read_findings(reader_or_fn, [ex.text for ex in examples])
    groups = [getattr(ex, by) for ex in examples] if by else None
    return score([(ex.findings, r) for ex, r in zip(examples, read, strict=True)], groups)
