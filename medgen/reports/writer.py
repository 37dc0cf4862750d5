"""Radiology report writer (English and Chinese) over structured `Findings`.

Reports come from *phrasing families*: groups of templates, synonym sets and section orders that differ
in structure and vocabulary (see `report_families_en` / `report_families_zh`). Families are split into
"train" (~70 %) and "heldout" (~30 %) so that evaluation can test generalisation to wording the model
never saw; `write_report(..., split="heldout")` draws only held-out families.

Example:
    >>> report = write_report(Findings(), language="zh", rng=np.random.default_rng(0))
    >>> report.family, report.split
    ('zh.listed', 'train')
    >>> write_report(findings, language="en", rng=rng, split="heldout").family in PHRASING_FAMILIES["heldout"]
    True

The writer never consults the parser (`medgen.reports.rule_parser`): `parse_report` and `implied_density`
are re-exported here lazily, so importing this module does not import the parser. Tests check that the
parser recovers the findings from every family.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medgen.findings import Findings
from medgen.reports import families_clinical_en as report_families_clinical_en
from medgen.reports import families_clinical_zh as report_families_clinical_zh
from medgen.reports import families_en as report_families_en
from medgen.reports import families_plain as report_families_plain
from medgen.reports import families_zh as report_families_zh
from medgen.reports.spans import Span, strip_marks

__all__ = ["HEDGING_FAMILIES", "LANGUAGES", "PHRASING_FAMILIES", "Report", "families_for", "write_report"]

LANGUAGES = ("en", "zh")
SPLITS = ("train", "heldout")

_MODULES = (report_families_en, report_families_clinical_en, report_families_plain, report_families_zh,
            report_families_clinical_zh)
_RENDERERS = {name: render for module in _MODULES for name, render in (*module.TRAIN.items(), *module.HELDOUT.items())}
# Family ids ("en.sectioned", "zh.windows", ...) per split; the language is the id's prefix.
PHRASING_FAMILIES: dict[str, tuple[str, ...]] = {
    "train": tuple(name for module in _MODULES for name in module.TRAIN),
    "heldout": tuple(name for module in _MODULES for name in module.HELDOUT),
}
# Families that can say a finding is only possible ("cannot be excluded", 可疑); the others state findings.
HEDGING_FAMILIES = (*report_families_clinical_en.TRAIN, *report_families_clinical_en.HELDOUT,
                    *report_families_clinical_zh.TRAIN, *report_families_clinical_zh.HELDOUT)


@dataclass
class Report:
    """A written report.

    Args:
        text: the report.
        language: "en" or "zh".
        family: phrasing-family id (a key of one of `PHRASING_FAMILIES`' tuples).
        split: "train" or "heldout", the split the family belongs to.
        spans: character spans of the words that state each finding (`medgen.reports.spans`), the reader's
            training targets.
    """

    text: str
    language: str
    family: str
    split: str
    spans: tuple[Span, ...] = ()


def families_for(language: str, split: str) -> tuple[str, ...]:
    """Family ids of one language in one split."""
    if language not in LANGUAGES:
        raise ValueError(f"`language` must be one of {LANGUAGES}, got {language!r}")
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    return tuple(f for f in PHRASING_FAMILIES[split] if f.startswith(language + "."))


def write_report(findings: Findings, *, language: str = "en", rng: np.random.Generator, split: str = "train",
                 family: str | None = None) -> Report:
    """Write a radiology report describing `findings`.

    Args:
        findings: ground truth to describe (lesion centres are not mentioned).
        language: "en" or "zh".
        rng: the only source of randomness; the same generator state gives the same report.
        split: "train" or "heldout": which phrasing families may be drawn.
        family: force one family id of that language and split (for demos and tests); drawn from `rng`
            when None. Findings with `certainty="possible"` need one of `HEDGING_FAMILIES`.
    """
    allowed = families_for(language, split)
    if _has_possible(findings):
        allowed = tuple(f for f in allowed if f in HEDGING_FAMILIES)
    if family is None:
        family = allowed[int(rng.integers(len(allowed)))]
    elif family not in allowed:
        raise ValueError(f"`family` must be one of {allowed} for language={language!r}, split={split!r}, "
                         f"got {family!r}")
    text = _RENDERERS[family](findings, rng)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    text = "\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1]))
    text, spans = strip_marks(text)
    return Report(text=text, language=language, family=family, split=split, spans=tuple(spans))


def _has_possible(findings: Findings) -> bool:
    items = [*findings.lesions, findings.effusion, findings.emphysema]
    return any(item is not None and item.certainty == "possible" for item in items)


def __getattr__(name):
    if name in ("parse_report", "implied_density"):
        from medgen.reports import rule_parser as report_parser

        return getattr(report_parser, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
