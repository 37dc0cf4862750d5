"""English families in the styles radiologists dictate: comparisons with a prior study, hedged findings,
corrections later in the sentence, numbers in words, three diameters, side-specific negations and findings
spread over several sentences.

These are the only English families that express `certainty == "possible"` (hedging). Each phrase bank
is split into "train" and "heldout" halves like `report_phrases_en`; `followup` (held out) uses only the
held-out halves.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import LOBES, Effusion, Findings
from medgen.reports.common import (
    ClinicalVoice,
    Measured,
    capitalize,
    chance,
    clinical_body,
    pick,
    size_text,
)
from medgen.reports.families_en import (
    effusion_marks,
    effusion_phrase,
    emphysema_marks,
    lesion_words,
    with_article,
)
from medgen.reports.phrases_en import (
    DISTRACTORS,
    EFFUSION_GRADE,
    EFFUSION_SIDE,
    EMPHYSEMA_GRADE,
    EMPHYSEMA_UPPER,
    NEG_EFFUSION,
    NEG_EMPHYSEMA,
    NEG_LESION,
    NORMAL,
    lobe_words,
)
from medgen.reports.spans import mark, visible

T, H = "train", "heldout"
DATES = ("2025-03-14", "03/02/2026", "January 2026", "12 August 2025")
COMPARE = {T: ("COMPARISON: CT chest {date}.", "Comparison: prior CT of {date}.",
               "Compared with the prior examination of {date}."),
           H: ("Prior study from {date} is available for review.", "Reference exam: {date}.")}
INTERVAL = {T: ("unchanged", "stable", "new", "enlarging", "slightly larger", "interval growth of the"),
            H: ("grossly similar", "newly seen", "minimally increased")}
HEDGE_PRE = {T: ("possible", "probable", "suspected", "likely", "presumed", "suspicious"), H: ("questionable", "equivocal")}
HEDGE_POST = {T: ("cannot be excluded", "is suspected", "is likely", "cannot be ruled out", "is possible",
                  "cannot be entirely excluded"), H: ("is not excluded", "may be present")}
CORRECTION = {T: (", correction, {right}", " (correction: {right})", ", or rather the {right}"),
              H: (", sorry, {right}", " -- amended to {right} --")}
RESOLVED = {T: ("The previously described {loc} {noun} has resolved.", "Interval resolution of the {loc} {noun}."),
            H: ("The {loc} {noun} seen before is no longer visible.",)}
SIDE_NEG = {T: ("No {side} ⟦eff-|pleural effusion⟧.", "No ⟦eff-|effusion⟧ on the {side}.",
                "No {side}-sided ⟦eff-|effusion⟧."),
            H: ("The {side} ⟦eff-|pleural space⟧ is clear.",)}
ANAPHOR = {T: ("This measures {size}.", "This nodule measures {size}.", "Size is {size}."),
           H: ("On the current study it spans {size}.",)}
SIZE_STYLES = {T: ("words-mm", "words-cm", "axbxc-cm", "by-cm", "mm-long", "mm", "cm", "axb"),
               H: ("words-cm", "by-cm", "axbxc-cm", "mm")}
_OTHER = {"left": "right", "right": "left"}


def _wrong_lobe(lobe: str, rng: np.random.Generator) -> str:
    """Another lobe's words, unmarked: what a correction replaces."""
    other = pick(rng, [x for x in LOBES if x != lobe])
    return visible(lobe_words(other, rng, ("full", "abbr")))


def _where(m: Measured, rng: np.random.Generator, vocab: str, p_correct: float = 0.15) -> str:
    """'the RUL' or, now and then, 'the LLL, correction, RUL' (only the corrected lobe is marked)."""
    loc = lobe_words(m.lobe, rng, ("full", "abbr", "of-lung", "segment"))
    if chance(rng, p_correct):
        return f"the {_wrong_lobe(m.lobe, rng)}" + pick(rng, CORRECTION[vocab]).format(right=loc)
    return f"the {loc}"


def _lesion(m: Measured, rng: np.random.Generator, vocab: str) -> list[str]:
    w = lesion_words(m, rng, vocab)
    size = size_text(m, pick(rng, SIZE_STYLES[vocab]))
    where = _where(m, rng, vocab)
    if m.lesion.certainty == "possible":
        return [pick(rng, (
            capitalize(f"{pick(rng, HEDGE_PRE[vocab])} {size} {w['d']} {w['n']} in {where}."),
            capitalize(f"{with_article(w['d'] + ' ' + w['n'])} in {where} ({size}) {pick(rng, HEDGE_POST[vocab])}."),
        ))]
    interval = pick(rng, INTERVAL[vocab]) if chance(rng, 0.5) else ""
    if chance(rng, 0.4):  # spread over several sentences
        intro = f"There is {with_article(w['d'] + ' ' + w['n'])} in {where}."
        return [intro, pick(rng, ANAPHOR[vocab]).format(size=size), f"Margins are {w['mg']}."]
    lead = f"{interval} {size}" if interval else with_article(size)
    sentence = f"{lead} {w['mg']} {w['d']} {w['n']} in {where}"
    if interval.startswith("interval"):
        sentence = f"{interval} {w['d']} {w['n']} in {where}, now {size}"
    return [capitalize(sentence + ".") if interval else f"There is {sentence}."]


def _effusion(e: Effusion, rng: np.random.Generator, vocab: str) -> list[str]:
    if e.certainty == "possible":
        grade, side, noun = effusion_marks(e, pick(rng, EFFUSION_GRADE[vocab][e.grade]),
                                           pick(rng, EFFUSION_SIDE[vocab][e.side]), "pleural effusion")
        out = [pick(rng, (capitalize(f"{pick(rng, HEDGE_PRE[vocab])} {grade} {side} {noun}."),
                          capitalize(f"{grade} {side} {noun} {pick(rng, HEDGE_POST[vocab])}.")))]
    else:
        interval = pick(rng, INTERVAL[vocab][:3]) if chance(rng, 0.4) else ""
        out = [capitalize(f"{interval + ' ' if interval else ''}{effusion_phrase(e, rng, vocab)}.")]
    if e.side in _OTHER and chance(rng, 0.6):
        side = mark(_OTHER[e.side], f"eside={_OTHER[e.side]}")
        out.insert(int(rng.integers(2)), pick(rng, SIDE_NEG[vocab]).format(side=side))
    return out


def _emphysema(f: Findings, rng: np.random.Generator, vocab: str) -> list[str]:
    x = f.emphysema
    where = pick(rng, EMPHYSEMA_UPPER[vocab]) if x.upper_predominant else ""
    grade, noun, where = emphysema_marks(x, pick(rng, EMPHYSEMA_GRADE[vocab][x.grade]), where)
    if x.certainty == "possible":
        return [capitalize(f"{pick(rng, HEDGE_PRE[vocab])} {grade} {noun}{where}.")]
    return [capitalize(f"{grade} {noun}{where}" + (", unchanged." if chance(rng, 0.3) else "."))]


def _resolved(f: Findings, rng: np.random.Generator, vocab: str) -> list[str]:
    """A lesion of the prior study that is gone: a negated mention with a lobe that has no current lesion."""
    free = [lobe for lobe in LOBES if lobe not in {lesion.lobe for lesion in f.lesions}]
    if not free or not chance(rng, 0.3):
        return []
    lobe = pick(rng, free)
    loc = lobe_words(lobe, rng, ("full", "abbr"))
    return [pick(rng, RESOLVED[vocab]).format(loc=loc, noun=mark(pick(rng, ("nodule", "focus")), "les-"))]


def _body(f: Findings, rng: np.random.Generator, vocab: str) -> list[str]:
    return clinical_body(f, rng, vocab, _VOICE)


_VOICE = ClinicalVoice(_lesion, _resolved, _effusion, _emphysema, NEG_LESION, NEG_EFFUSION, NEG_EMPHYSEMA)


def dictated(f: Findings, rng: np.random.Generator) -> str:
    """COMPARISON line, then FINDINGS prose with interval change, hedges, corrections and side negations."""
    head = pick(rng, COMPARE[T]).format(date=pick(rng, DATES))
    body = _body(f, rng, T) + list(rng.permutation(DISTRACTORS[T])[: int(rng.integers(3))])
    if f.is_normal:
        body.append(pick(rng, NORMAL[T]))
    impression = "IMPRESSION: " + pick(rng, ("As above.", "See findings.", "Findings as described."))
    return "\n".join([head, "FINDINGS: " + " ".join(body), impression])


def followup(f: Findings, rng: np.random.Generator) -> str:
    """Held out: a follow-up note in one paragraph, held-out hedges, corrections and interval words."""
    head = pick(rng, COMPARE[H]).format(date=pick(rng, DATES))
    body = _body(f, rng, H) + list(rng.permutation(DISTRACTORS[H])[: int(rng.integers(2))])
    if f.is_normal:
        body.append(pick(rng, NORMAL[H]))
    return head + " " + " ".join(body)


TRAIN = {"en.dictated": dictated}
HELDOUT = {"en.followup": followup}
