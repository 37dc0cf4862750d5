"""Plain-sentence phrasing families (training split), English and Chinese: each finding in one short sentence
whose syntactic frame is drawn per finding (verbless, fronted location, passive "noted is", lobe as a modifier,
size last, telegraphic without a preposition, ...), as people who do not follow any template write.

They widen the *structures* the reader sees in training; the words come from the training halves of the phrase
banks, so the held-out families stay held out. Same contract as `report_families_en`.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import Findings
from medgen.reports.common import Measured, capitalize, measure_all, pick, size_text
from medgen.reports.families_en import (
    _negations,
    effusion_phrase,
    emphysema_phrase,
    lesion_words,
    with_article,
)
from medgen.reports.families_zh import _negations as _negations_zh
from medgen.reports.families_zh import effusion_words, emphysema_words
from medgen.reports.families_zh import lesion_words as lesion_words_zh
from medgen.reports.phrases_en import NORMAL, lobe_words
from medgen.reports.phrases_zh import NORMAL as NORMAL_ZH
from medgen.reports.phrases_zh import lobe_words as lobe_words_zh

T = "train"


def _lesion_en(m: Measured, rng: np.random.Generator) -> str:
    w = lesion_words(m, rng, T)
    lobe = lobe_words(m.lobe, rng, ("full", "full", "abbr", "of-lung"))
    size = size_text(m, pick(rng, ("mm", "mm", "cm", "axb", "mm-adj", "words-mm")))
    sdn, dn = f"{size} {w['d']} {w['n']}", f"{w['d']} {w['n']}"
    frames = (
        f"{capitalize(with_article(sdn))} in the {lobe}.",
        f"{capitalize(with_article(dn))} in the {lobe}, {size}.",
        f"Noted is {with_article(sdn)} in the {lobe}.",
        f"The {lobe} contains {with_article(sdn)}.",
        f"{capitalize(sdn)} {lobe}.",
        f"Seen in the {lobe} is {with_article(dn)} of {size}.",
        f"{capitalize(w['n'])}, {w['d']}, in the {lobe} measuring {size}.",
        f"{capitalize(lobe)} {dn} measures {size}.",
        f"{capitalize(with_article(dn))} ({size}) is in the {lobe}, {w['mg']}.",
    )
    return pick(rng, frames)


def plain_en(f: Findings, rng: np.random.Generator) -> str:
    """One plain sentence per finding, frames drawn per finding; no headings."""
    out = [_lesion_en(m, rng) for m in measure_all(f, rng)]
    if f.effusion:
        phrase = effusion_phrase(f.effusion, rng)
        out.append(pick(rng, (f"{capitalize(phrase)}.", f"Also {with_article(phrase)}." if f.effusion.side != "bilateral"
                              else f"Also {phrase}.", f"{capitalize(phrase)} is present.")))
    if f.emphysema:
        phrase = emphysema_phrase(f.emphysema, rng)
        out.append(pick(rng, (f"{capitalize(phrase)}.", f"The lungs show {phrase}.", f"Background {phrase}.")))
    out += _negations(f, rng, T, p=0.5)
    if f.is_normal:
        out.append(pick(rng, NORMAL[T]))
    return " ".join(out)


def _lesion_zh(m: Measured, rng: np.random.Generator) -> str:
    w = lesion_words_zh(m, rng, T)
    lobe = lobe_words_zh(m.lobe, rng, ("full", "full", "colloq"))
    size = size_text(m, pick(rng, ("zh-mm", "zh-axb", "zh-cm", "zh-haomi")))
    frames = (
        f"{lobe}{w['d']}{w['n']}，约{size}。",
        f"{lobe}见一{w['d']}{w['n']}，直径约{size}。",
        f"{lobe}可见大小约{size}的{w['d']}{w['n']}。",
        f"{lobe}{w['d']}{w['n']}（{size}）。",
        f"{w['d']}{w['n']}位于{lobe}，大小{size}。",
        f"{lobe}：{w['d']}{w['n']}，{size}，{w['mg']}。",
    )
    return pick(rng, frames)


def plain_zh(f: Findings, rng: np.random.Generator) -> str:
    out = [_lesion_zh(m, rng) for m in measure_all(f, rng)]
    if f.effusion:
        side, grade = effusion_words(f.effusion, rng)
        out.append(pick(rng, (f"{side}{grade}⟦eff|胸腔积液⟧。", f"另见{side}{grade}⟦eff|胸腔积液⟧。")))
    if f.emphysema:
        grade, where = emphysema_words(f.emphysema, rng)
        out.append(pick(rng, (f"{grade}⟦emph|肺气肿⟧{where}。", f"双肺{grade}⟦emph|肺气肿⟧{where}。")))
    out += _negations_zh(f, rng, T, p=0.5)
    if f.is_normal:
        out.append(pick(rng, NORMAL_ZH[T]))
    return "".join(out)


TRAIN = {"en.plain": plain_en, "zh.plain": plain_zh}
HELDOUT: dict = {}
