"""Training and evaluation reports for the reader: random findings written by the report writer's phrasing
families, with the writer's span marks as token targets.

Findings are drawn wider than the phantom's (`medgen.phantom.chest.sample_findings`): 0-4 lesions of 4-90 mm,
hedged (possible) findings for the families that can say so, and now and then a paragraph of unrelated
English text with no finding at all, so that the reader learns to tag nothing there.

Training reports are also perturbed (`augment`): sentences about other organs that carry sizes, nodules
and effusions the reader must NOT take (thyroid nodule, lymph node, pericardial effusion), dictation in
lower case, line breaks folded into spaces, and (English) words the writer never uses: untagged words swapped
for, or joined by, words from a general English pool (standard-library docstrings), so the reader learns to
take a finding from its tagged words and their grammar rather than from a template's filler. Cue words that
change a tag (negation, hedging, comparison) are never swapped.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass

import numpy as np

from medgen.findings import (
    EFFUSION_GRADES,
    EMPHYSEMA_GRADES,
    LOBES,
    MARGINS,
    SIDES,
    Effusion,
    Emphysema,
    Findings,
    Lesion,
)
from medgen.reports.spans import Span
from medgen.reports.writer import HEDGING_FAMILIES, families_for, write_report


@dataclass
class ReaderExample:
    text: str
    spans: tuple[Span, ...]
    findings: Findings | None  # None for unrelated text
    language: str
    family: str
    types_stated: bool = True  # False when augmentation dropped a type adjective (the findings still hold it)


def sample_reader_findings(rng: np.random.Generator, *, hedged: bool) -> Findings:
    """Random findings; with `hedged`, each finding is 'possible' with probability 0.3."""
    def certainty():
        return "possible" if hedged and rng.random() < 0.3 else "definite"

    if rng.random() < 0.2:
        return Findings()
    n = int(rng.choice(5, p=(0.25, 0.35, 0.2, 0.12, 0.08)))
    lesions = [Lesion(lobe=str(rng.choice(LOBES)), diameter_mm=round(float(np.exp(rng.uniform(np.log(4), np.log(90)))), 1),
                      density=round(float(rng.uniform(0, 1)), 3), margin=str(rng.choice(MARGINS)), certainty=certainty())
               for _ in range(n)]
    effusion = (Effusion(str(rng.choice(SIDES)), str(rng.choice(EFFUSION_GRADES)), certainty())
                if rng.random() < 0.35 else None)
    emphysema = (Emphysema(str(rng.choice(EMPHYSEMA_GRADES)), bool(rng.random() < 0.5), certainty())
                 if rng.random() < 0.3 else None)
    return Findings(lesions, effusion, emphysema)


# Sentences about other organs: sizes and nodules/effusions that are not lung findings (tagged nothing).
OTHER_ORGANS = {
    "en": ("A {n} mm nodule in the left thyroid lobe.", "Subcarinal lymph node measures {n} mm in short axis.",
           "Small pericardial effusion.", "A {n} mm hypodense lesion in the liver, likely a cyst.",
           "Right adrenal nodule of {n} mm.", "Prior right upper lobe wedge resection.", "Trace pericardial fluid.",
           "Coronary artery calcifications.", "The {n} mm precarinal node is not enlarged.",
           "Thyroid nodule measuring {c} cm.", "Incidental {n} mm renal cyst."),
    "zh": ("甲状腺左叶见结节，约{n}mm。", "纵隔淋巴结短径约{n}mm。", "心包少量积液。", "肝内见低密度灶，约{n}mm，考虑囊肿。",
           "右侧肾上腺结节，约{n}mm。", "冠状动脉钙化。", "心包腔少许积液。", "甲状腺右叶结节，大小约{c}cm。"),
}


# Untagged English words that decide a tag (negation, hedging, comparison): never swapped by `augment`.
CUE_WORDS = frozenset("""no not nor without negative absent free clear clears cleared resolved resolution none nil
possible possibly probable probably suspected suspicious suspect questionable likely unlikely cannot excluded
exclude equivocal may might could new unchanged stable previously prior removed normal unremarkable or
correction sorry rather instead meant read should versus vs""".split())


def _splice(text: str, spans: list[Span], start: int, end: int, new: str) -> tuple[str, list[Span]]:
    """Replace ``text[start:end]`` by `new`; spans that begin at or after `end` move with the text after it."""
    shift = len(new) - (end - start)
    return text[:start] + new + text[end:], [Span(s.start + shift * (s.start >= end), s.end + shift * (s.start >= end),
                                                  s.label) for s in spans]


def _swap_filler(text: str, spans: list[Span], rng: np.random.Generator, pool: list[str], p_swap: float,
                 n_insert: int) -> tuple[str, list[Span]]:
    """Replace untagged non-cue words (prob `p_swap`) and insert `n_insert` pool words between untagged words."""
    covered = np.zeros(len(text) + 1, dtype=bool)
    for s in spans:
        covered[s.start:s.end] = True
    words = [m for m in re.finditer(r"[A-Za-z][A-Za-z-]{2,}", text)
             if not covered[m.start():m.end()].any() and m.group().lower() not in CUE_WORDS]
    edits = [(m.start(), m.end(), str(rng.choice(pool))) for m in words if rng.random() < p_swap]
    gaps = [m.end() for m in re.finditer(r"[A-Za-z,]( )[A-Za-z]", text) if not covered[m.end() - 1]]
    taken = {e[0] for e in edits}
    for at in (rng.choice(gaps, size=min(n_insert, len(gaps)), replace=False) if gaps else ()):
        if int(at) not in taken:
            edits.append((int(at), int(at), str(rng.choice(pool)) + " "))
    for start, end, new in sorted(edits, reverse=True):
        text, spans = _splice(text, spans, start, end, new)
    return text, spans


def _n_type_spans(spans) -> int:
    return sum(any(lab.startswith("type=") for lab in s.labels) for s in spans)


def drop_type_words(text: str, spans: list[Span], rng: np.random.Generator, p: float) -> tuple[str, list[Span]]:
    """Remove one-word lesion type adjectives ("solid", "磨玻璃") with probability `p` each, as reports that
    name no type do ("A 35 mm mass in the right lower lobe."): the writer always names one, and a reader
    trained only on that misses the lesion when it is absent. A word another span overlaps is kept."""
    for s in sorted((s for s in spans if all(lab.startswith("type=") for lab in s.labels)), key=lambda s: -s.start):
        word = text[s.start:s.end]
        start, end = s.start, s.end + (text[s.end:s.end + 1] == " ")
        adjective = (re.fullmatch(r"[A-Za-z-]+|[\u4e00-\u9fff]{1,5}", word) is not None
                     and end < len(text) and (text[end].isalnum()))  # it qualifies the next word
        overlapped = any(o != s and o.start < s.end and s.start < o.end for o in spans)
        if not adjective or overlapped or rng.random() >= p:
            continue
        text, spans = _splice(text, [o for o in spans if o != s], start, end, "")
    return text, spans


def augment(text: str, spans: tuple[Span, ...], language: str, rng: np.random.Generator):
    """Drop type adjectives, insert other-organ sentences at sentence ends, swap/insert English filler words,
    fold line breaks, lower-case (spans follow)."""
    spans = list(spans)
    if rng.random() < 0.3:
        text, spans = drop_type_words(text, spans, rng, p=0.6)
    if language == "en" and rng.random() < 0.5:
        text, spans = _swap_filler(text, spans, rng, _filler_words(), p_swap=float(rng.uniform(0.05, 0.25)),
                                   n_insert=int(rng.integers(0, 4)))
    for _ in range(int(rng.choice(3, p=(0.5, 0.35, 0.15)))):
        n = int(rng.integers(4, 40))
        sentence = str(rng.choice(OTHER_ORGANS[language])).format(n=n, c=f"{n / 10:.1f}")
        ends = [m.end() for m in re.finditer(r"[.。]\s|\n|[.。]$", text)] or [len(text)]
        at = int(rng.choice(ends))
        piece = (sentence + " ") if language == "en" else sentence
        if at == len(text):
            piece = (" " if language == "en" else "") + sentence
        text, spans = _splice(text, spans, at, at, piece)
    if rng.random() < 0.15:
        text = text.replace("\n", " ")  # same length: spans unchanged
    if language == "en" and rng.random() < 0.12:
        text = text.lower()
    return text, tuple(spans)


def make_examples(n: int, *, split: str, seed: int, languages=("en", "zh"), p_unrelated: float = 0.0,
                  families: tuple[str, ...] | None = None, augmented: bool = False) -> list[ReaderExample]:
    """`n` written reports of one split (languages alternate), optionally some unrelated paragraphs.

    Args:
        families: restrict to these family ids (default: every family of the split).
        augmented: perturb the reports (`augment`; for training).
    """
    rng = np.random.default_rng(seed)
    unrelated = _unrelated_paragraphs() if p_unrelated > 0 else []
    out = []
    for i in range(n):
        if unrelated and rng.random() < p_unrelated:
            out.append(ReaderExample(str(rng.choice(unrelated)), (), None, "en", "unrelated"))
            continue
        language = languages[i % len(languages)]
        allowed = families_for(language, split)
        if families is not None:
            allowed = tuple(f for f in allowed if f in families)
        family = str(rng.choice(allowed))
        findings = sample_reader_findings(rng, hedged=family in HEDGING_FAMILIES)
        report = write_report(findings, language=language, rng=rng, split=split, family=family)
        text, spans = report.text, report.spans
        n_types = _n_type_spans(spans)
        if augmented:
            text, spans = augment(text, spans, language, rng)
        out.append(ReaderExample(text, spans, findings, language, family, _n_type_spans(spans) == n_types))
    return out


@functools.lru_cache(maxsize=1)
def _filler_words() -> list[str]:
    """Lower-case English words of 3-12 letters from the unrelated paragraphs (no chest vocabulary)."""
    words = {w.lower() for para in _unrelated_paragraphs() for w in re.findall(r"[A-Za-z]{3,12}", para)}
    return sorted(words - CUE_WORDS)


@functools.lru_cache(maxsize=1)
def _unrelated_paragraphs() -> list[str]:
    """English paragraphs with no chest findings: docstrings of standard-library modules (always offline)."""
    import argparse
    import collections
    import json
    import logging
    import pathlib
    import textwrap

    texts = []
    for module in (argparse, collections, json, logging, pathlib, textwrap, re, inspect):
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj) or ""
            for para in doc.split("\n\n"):
                para = " ".join(para.split())
                if 80 <= len(para) <= 600 and ">>>" not in para:
                    texts.append(para)
    return sorted(set(texts))
