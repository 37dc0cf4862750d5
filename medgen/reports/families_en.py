"""English phrasing families: each renders `Findings` into one report layout with its own vocabulary.

A family is a function ``(findings, rng) -> str``. `TRAIN` and `HELDOUT` map family ids to them; the
held-out ones differ in layout (lung-by-lung headings, pronoun follow-up sentences, conclusion-only
lists) and draw from the "heldout" half of every phrase bank.
"""

from __future__ import annotations

import numpy as np

from medgen.findings import Effusion, Emphysema, Findings
from medgen.reports.common import (
    Measured,
    article,
    capitalize,
    chance,
    measure_all,
    negations,
    numbered,
    pick,
    size_text,
    some_of,
    worded_kind,
)
from medgen.reports.phrases_en import (
    DENSITY_ADJ,
    DENSITY_POST,
    DISTRACTORS,
    EFFUSION_AMOUNT,
    EFFUSION_GRADE,
    EFFUSION_SIDE,
    EFFUSION_WHERE,
    EFFUSION_WHERE_TRAIN,
    EMPHYSEMA_DIFFUSE,
    EMPHYSEMA_GRADE,
    EMPHYSEMA_UPPER,
    LOBE_ABBR,
    LOBE_FULL,
    MARGIN,
    NEG_EFFUSION,
    NEG_EMPHYSEMA,
    NEG_LESION,
    NORMAL,
    NOUN,
    lobe_words,
)
from medgen.reports.spans import certainty_tag, mark

T, H = "train", "heldout"


def with_article(phrase: str) -> str:
    """Phrase with its indefinite article."""
    return f"{article(phrase)} {phrase}"


def lesion_words(m: Measured, rng: np.random.Generator, vocab: str, repeat: bool = False) -> dict:
    """Density adjective ('d') and phrase ('post'), noun ('n') and margin word ('mg') of one lesion, marked;
    `repeat`: the noun restates a lesion already described (an IMPRESSION line), tagged 'les^'."""
    post = pick(rng, DENSITY_POST[vocab][m.density]).format(solid=with_article(f"{m.solid_mm} mm"))
    return {"d": mark(pick(rng, DENSITY_ADJ[vocab][m.density]), f"type={m.density}"),
            "post": mark(post, f"type={m.density}"), "n": mark(pick(rng, NOUN[vocab][worded_kind(m, rng, vocab)]), "les^" if repeat else certainty_tag("les", m.lesion.certainty)),
            "mg": mark(pick(rng, MARGIN[vocab][m.margin]), f"margin={m.margin}")}


def _loc(m: Measured, words: str) -> str:
    return mark(words, f"loc={m.lobe}")


def effusion_marks(e: Effusion, grade: str, side: str, noun: str) -> tuple[str, str, str]:
    """Grade, side and noun words of an effusion, each marked."""
    return (mark(grade, f"egrade={e.grade}"), mark(side, f"eside={e.side}"),
            mark(noun, certainty_tag("eff", e.certainty)))


def emphysema_marks(x: Emphysema, grade: str, where: str, noun: str = "emphysema") -> tuple[str, str, str]:
    """Grade, noun and distribution words of emphysema, each marked (the distribution only when said)."""
    return mark(grade, f"xgrade={x.grade}"), mark(noun, certainty_tag("emph", x.certainty)), _where(x, where)


def _where(x: Emphysema, where: str) -> str:
    """Mark the distribution words, keeping any leading ', ' / ' with ' outside the mark."""
    body = where.lstrip(" ,")
    for lead in ("with ", "in ", "and "):
        if body.startswith(lead):
            body = body[len(lead):]
    return where[:len(where) - len(body)] + mark(body, f"xdist={x.distribution}")


def effusion_phrase(e: Effusion, rng: np.random.Generator, vocab: str = T) -> str:
    """'small left pleural effusion' / 'moderate bilateral pleural effusions' (no article)."""
    noun = "pleural effusions" if e.side == "bilateral" else "pleural effusion"
    if vocab == T:
        noun = pick(rng, (noun, noun, "effusion" + noun[-1] * (noun[-1] == "s"), "pleural fluid collection",
                          "pleural fluid"))
    if vocab == T and chance(rng, 0.2):  # the side after the noun: "small effusion in the left pleural space"
        grade, where, noun = effusion_marks(e, pick(rng, EFFUSION_GRADE[T][e.grade]),
                                            pick(rng, EFFUSION_WHERE_TRAIN[e.side]), noun)
        return f"{grade} {noun} {where}"
    grade, side, noun = effusion_marks(e, pick(rng, EFFUSION_GRADE[vocab][e.grade]),
                                       pick(rng, EFFUSION_SIDE[vocab][e.side]), noun)
    return f"{grade} {side} {noun}"


def emphysema_phrase(x: Emphysema, rng: np.random.Generator, vocab: str = T, kind: str = "") -> str:
    """'moderate centrilobular emphysema, upper lobe predominant' (no article)."""
    where = pick(rng, EMPHYSEMA_UPPER[vocab] if x.upper_predominant else EMPHYSEMA_DIFFUSE[vocab])
    grade, noun, where = emphysema_marks(x, pick(rng, EMPHYSEMA_GRADE[vocab][x.grade]), where)
    return f"{grade} {kind + ' ' if kind else ''}{noun}{where}"


def _negations(f: Findings, rng: np.random.Generator, vocab: str, p: float = 0.7) -> list[str]:
    return negations(f, rng, NEG_LESION[vocab], NEG_EFFUSION[vocab], NEG_EMPHYSEMA[vocab], p)


def _distractors(rng: np.random.Generator, vocab: str, k_max: int = 2) -> list[str]:
    return some_of(rng, DISTRACTORS[vocab], k_max)


def _impression(f: Findings, ms: list[Measured], rng: np.random.Generator) -> list[str]:
    """Numbered IMPRESSION lines in training vocabulary; a normal-study sentence when nothing is found."""
    items = []
    for m in ms:
        w = lesion_words(m, rng, T, repeat=True)
        lobe = lobe_words(m.lobe, rng, ("full", "abbr"))
        items.append(capitalize(pick(rng, (f"{size_text(m, 'mm')} {w['d']} {w['n']}, {lobe}.",
                                           f"{lobe} {w['d']} {w['n']} ({size_text(m, 'mm')})."))))
    if f.effusion:
        items.append(capitalize(effusion_phrase(f.effusion, rng) + "."))
    if f.emphysema:
        items.append(capitalize(emphysema_phrase(f.emphysema, rng) + "."))
    return numbered(items) if items else [pick(rng, NORMAL[T])]


# ---------------------------------------------------------------- training families
def sectioned(f: Findings, rng: np.random.Generator) -> str:
    """EXAMINATION / FINDINGS / numbered IMPRESSION; full lobe names; 'There is a ...' sentences."""
    ms, body = measure_all(f, rng), []
    for m in ms:
        w, lobe = lesion_words(m, rng, T), lobe_words(m.lobe, rng, ("full", "full", "of-lung"))
        size = size_text(m, pick(rng, ("mm", "axb", "cm")))
        body.append(pick(rng, (
            f"There is {with_article(' '.join((size, w['d'], w['n'])))} in the {lobe} with {w['mg']} margins.",
            capitalize(f"{with_article(w['d'] + ' ' + w['n'])} with {w['mg']} margins is present in the {lobe}, "
                       f"measuring {size}."),
            f"In the {lobe}, there is {with_article(' '.join((size, w['mg'], w['d'], w['n'])))}.",
        )))
    if f.effusion:
        phrase = effusion_phrase(f.effusion, rng)
        body.append(f"There are {phrase}." if f.effusion.side == "bilateral" else f"There is {with_article(phrase)}.")
    if f.emphysema:
        body.append(capitalize(emphysema_phrase(f.emphysema, rng, kind="centrilobular") + "."))
    body += _negations(f, rng, T) + _distractors(rng, T)
    head = ["EXAMINATION: CT chest without contrast."] if chance(rng, 0.6) else []
    return "\n".join([*head, "FINDINGS:", " ".join(body), "", "IMPRESSION:", *_impression(f, ms, rng)])


def organ_headers(f: Findings, rng: np.random.Generator) -> str:
    """LUNGS / PLEURA / HEART AND MEDIASTINUM paragraphs; lobe abbreviations; sizes in cm."""
    lungs = []
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, T)
        size = size_text(m, pick(rng, ("cm", "axb-cm")))
        lungs.append(pick(rng, (
            f"{_loc(m, LOBE_ABBR[m.lobe])} {w['d']} {w['n']} measuring {size} with {w['mg']} margins.",
            capitalize(f"{size} {w['mg']} {w['d']} {w['n']} in the {lobe_words(m.lobe, rng, ('abbr', 'full'))}."),
        )))
    if f.emphysema:
        lungs.append(capitalize(emphysema_phrase(f.emphysema, rng, kind=pick(rng, ("centrilobular", ""))) + "."))
    if not lungs:
        lungs.append(pick(rng, ("⟦norm|The lungs are clear⟧.", *NEG_LESION[T])))
    elif f.emphysema is None and chance(rng, 0.3):
        lungs.append(pick(rng, NEG_EMPHYSEMA[T]))
    pleura = [capitalize(effusion_phrase(f.effusion, rng) + ".") if f.effusion
              else pick(rng, ("No ⟦eff-|effusion⟧.", *NEG_EFFUSION[T]))]
    if chance(rng, 0.5):
        pleura.append("No pneumothorax.")
    heart = pick(rng, ("Normal heart size. No pericardial effusion.", "Heart size is normal.",
                       "No mediastinal or hilar lymphadenopathy."))
    lines = [f"LUNGS: {' '.join(lungs)}", f"PLEURA: {' '.join(pleura)}", f"HEART AND MEDIASTINUM: {heart}"]
    if chance(rng, 0.7):
        lines += ["IMPRESSION:", *_impression(f, [], rng)] if f.is_normal else ["IMPRESSION: See above."]
    return "\n".join(lines)


def narrative(f: Findings, rng: np.random.Generator) -> str:
    """Free prose, no headings; 'upper lobe of the right lung' and segment names; 'Within the ...'."""
    out = [pick(rng, ("Non-contrast CT of the chest.", "CT of the thorax was performed without contrast.", ""))]
    for m in measure_all(f, rng):
        w, lobe = lesion_words(m, rng, T), lobe_words(m.lobe, rng, ("of-lung", "segment", "full"))
        size = size_text(m, pick(rng, ("mm", "cm", "axb-x")))
        out.append(pick(rng, (
            f"Within the {lobe} is {with_article(w['d'] + ' ' + w['n'])} measuring {size}, with {w['mg']} margins.",
            capitalize(f"{with_article(w['mg'] + ' ' + w['n'])} {w['post']} is seen in the {lobe}, measuring {size}."),
        )))
    if f.effusion:
        out.append(f"There {'are' if f.effusion.side == 'bilateral' else 'is'} "
                   + (effusion_phrase(f.effusion, rng) if f.effusion.side == "bilateral"
                      else with_article(effusion_phrase(f.effusion, rng))) + ".")
    if f.emphysema:
        x = f.emphysema
        where = " in an upper lobe predominant distribution" if x.upper_predominant else ""
        grade, noun, where = emphysema_marks(x, pick(rng, EMPHYSEMA_GRADE[T][x.grade]), where)
        out.append(f"Background {grade} {noun} is noted{where}.")
    out += _negations(f, rng, T) + _distractors(rng, T)
    if f.is_normal:
        out.append(pick(rng, NORMAL[T]))
    return " ".join(s for s in out if s)


def terse(f: Findings, rng: np.random.Generator) -> str:
    """Telegraphic fragments: 'RUL: 12 mm solid nodule, spiculated.' / 'Effusion: small, left.'"""
    out = []
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, T)
        out.append(f"{_loc(m, LOBE_ABBR[m.lobe])}: {size_text(m, pick(rng, ('mm', 'mm-adj')))} {w['d']} {w['n']}, "
                   f"{w['mg']}.")
    if f.effusion:
        e = f.effusion
        grade, side, label = effusion_marks(e, EFFUSION_GRADE[T][e.grade][0], EFFUSION_SIDE[T][e.side][0],
                                            "Effusions" if e.side == "bilateral" else "Effusion")
        out.append(pick(rng, (f"{label}: {grade}, {side}.", capitalize(effusion_phrase(e, rng) + "."))))
    if f.emphysema:
        x = f.emphysema
        grade, noun, where = emphysema_marks(x, EMPHYSEMA_GRADE[T][x.grade][0],
                                             ", upper lobe predominant" if x.upper_predominant else "", "Emphysema")
        out.append(f"{noun}: {grade}{where}.")
    out += _negations(f, rng, T, p=0.5)
    out.append(pick(rng, ("Otherwise unremarkable.", "No other findings.")) if not f.is_normal
               else pick(rng, ("⟦norm|Lungs clear⟧.", *NORMAL[T])))
    return "\n".join(out)


def measurement_first(f: Findings, rng: np.random.Generator) -> str:
    """Bulleted 'Findings:' list led by the size, with series/image references; brief 'Impression:'."""
    items = []
    for m in measure_all(f, rng):
        w = lesion_words(m, rng, T)
        ref = f" (series {int(rng.integers(2, 6))}, image {int(rng.integers(20, 300))})" if chance(rng, 0.7) else ""
        size = size_text(m, pick(rng, ("mm", "axb", "mm-mm")))
        items.append(f"{size} {w['mg']} {w['d']} {w['n']}, {lobe_words(m.lobe, rng, ('abbr', 'full'))}{ref}.")
    if f.effusion:
        items.append(capitalize(effusion_phrase(f.effusion, rng) + "."))
    if f.emphysema:
        items.append(capitalize(emphysema_phrase(f.emphysema, rng, kind="paraseptal and centrilobular") + "."))
    items += _negations(f, rng, T) + _distractors(rng, T, 1)
    if not items:
        items.append(pick(rng, NORMAL[T]))
    impression = "Findings as above." if not f.is_normal else pick(rng, NORMAL[T])
    return "\n".join(["Findings:", *(f"- {item}" for item in items), f"Impression: {impression}"])


def key_value(f: Findings, rng: np.random.Generator) -> str:
    """Structured template: one 'Lesion n — location: ...; size: ...' line per lesion, 'field: value' lines."""
    lines = ["Pulmonary nodules/masses:" if f.lesions else "Pulmonary ⟦les-|nodules/masses⟧: none."]
    for i, m in enumerate(measure_all(f, rng), 1):
        w = lesion_words(m, rng, T)
        lines.append(f"Lesion {i} — type: {mark(m.kind, 'les')}; location: {lobe_words(m.lobe, rng, ('full', 'abbr'))}; "
                     f"size: {size_text(m, pick(rng, ('axb', 'mm', 'axb-cm')))}; attenuation: {w['d']}; "
                     f"margin: {w['mg']}.")
    e, x = f.effusion, f.emphysema
    if e:
        grade, side, noun = effusion_marks(e, EFFUSION_GRADE[T][e.grade][0], EFFUSION_SIDE[T][e.side][0],
                                           "Pleural effusion")
        lines.append(f"{noun}: {grade}, {side}.")
    else:
        lines.append("⟦eff-|Pleural effusion⟧: none.")
    if x:
        grade, noun, where = emphysema_marks(x, EMPHYSEMA_GRADE[T][x.grade][0],
                                             ", upper lobe predominant" if x.upper_predominant else "", "Emphysema")
        lines.append(f"{noun}: {grade}{where}.")
    else:
        lines.append("⟦emph-|Emphysema⟧: none.")
    lines.append(f"Other: {' '.join(_distractors(rng, T, 2)) or 'none.'}")
    return "\n".join(lines)


def technique_first(f: Findings, rng: np.random.Generator) -> str:
    """TECHNIQUE / COMPARISON preamble, 'Lungs and airways:' paragraph with '<lobe> <noun> measures ...'."""
    ms, lungs = measure_all(f, rng), []
    for m in ms:
        w = lesion_words(m, rng, T)
        size = size_text(m, pick(rng, ("cm", "mm", "axb-cm")))
        lungs.append(capitalize(f"{_loc(m, LOBE_FULL[m.lobe])} {w['n']} measures {size} "
                                f"({w['d']}, {w['mg']} margins)."))
    if f.emphysema:
        lungs.append(f"There is {emphysema_phrase(f.emphysema, rng)}.")
    if f.effusion:
        lungs.append(capitalize(effusion_phrase(f.effusion, rng)) + ".")
    lungs += _negations(f, rng, T)
    if not lungs:
        lungs.append("⟦norm|The lungs are clear⟧.")
    technique = pick(rng, ("Axial CT images of the chest were obtained without intravenous contrast and "
                           "reconstructed at 1.25 mm.", "Helical CT of the chest, 2.5 mm slices, lung and soft "
                           "tissue kernels."))
    return "\n".join([f"TECHNIQUE: {technique}", f"COMPARISON: {pick(rng, ('None.', 'None available.'))}",
                      "FINDINGS:", "Lungs and airways: " + " ".join(lungs),
                      "Other: " + (" ".join(_distractors(rng, T, 2)) or "Unremarkable."),
                      "IMPRESSION:", *_impression(f, ms, rng)])


# ---------------------------------------------------------------- held-out families
def lung_by_lung(f: Findings, rng: np.random.Generator) -> str:
    """RIGHT LUNG / LEFT LUNG headings; lobes named without side ('The upper lobe contains ...')."""
    sections = []
    for side in ("right", "left"):
        said = []
        for m in measure_all(Findings(lesions=[lesion for lesion in f.lesions if lesion.side == side]), rng):
            w, zone = lesion_words(m, rng, H), lobe_words(m.lobe, rng, ("zone",))
            size = size_text(m, pick(rng, ("mm", "axb", "cm")))
            said.append(pick(rng, (f"The {zone} contains {with_article(' '.join((size, w['mg'], w['d'], w['n'])))}.",
                                   f"In the {zone} there is {with_article(w['n'])} measuring {size}; it is {w['post']}, "
                                   f"and its contour is {w['mg']}.")))
        if said and chance(rng, 0.5):
            said.append("The remaining lobes are clear.")
        sections.append(f"{side.upper()} LUNG: " + (" ".join(said) or pick(rng, ("Clear.", "No focal opacity."))))
    e = f.effusion
    if e:
        amount, where, noun = effusion_marks(e, pick(rng, EFFUSION_AMOUNT[e.grade]), pick(rng, EFFUSION_WHERE[e.side]),
                                             "pleural fluid")
        sections.append(f"PLEURA: {capitalize(amount)} {noun} {where}.")
    else:
        sections.append("PLEURA: " + pick(rng, NEG_EFFUSION[H]))
    other = [f"Background {emphysema_phrase(f.emphysema, rng, H)}." if f.emphysema else "",
             *_distractors(rng, H, 2)]
    sections.append("OTHER: " + (" ".join(s for s in other if s) or "Nothing further."))
    return "\n".join(sections)


def anaphoric(f: Findings, rng: np.random.Generator) -> str:
    """Each lesion introduced in one sentence and described by follow-up 'It measures ...' sentences."""
    out = []
    for m in measure_all(f, rng):
        w, lobe = lesion_words(m, rng, H), lobe_words(m.lobe, rng, ("segment", "of-lung"))
        size = size_text(m, pick(rng, ("axb-cm", "cm", "axb-x")))
        out.append(capitalize(f"{with_article(w['n'])} is identified in the {lobe}."))
        out.append(pick(rng, (f"It measures {size} and is {w['post']}.", f"It is {w['post']}, measuring {size}.")))
        out.append(pick(rng, (f"Its borders are {w['mg']}.", f"The lesion has {w['mg']} borders.")))
    e = f.effusion
    if e:
        amount, where, noun = effusion_marks(e, pick(rng, EFFUSION_AMOUNT[e.grade]), pick(rng, EFFUSION_WHERE[e.side]),
                                             "pleural fluid")
        out.append(f"There is {amount} {noun} {where}.")
    if f.emphysema:
        x = f.emphysema
        where = " and predominantly affects the upper zones" if x.upper_predominant else ""
        grade, noun, where = emphysema_marks(x, pick(rng, EMPHYSEMA_GRADE[H][x.grade]), where, "Emphysematous change")
        out.append(f"{noun} is {grade} in severity{where}.")
    out += _negations(f, rng, H) + _distractors(rng, H)
    if f.is_normal:
        out.append(pick(rng, NORMAL[H]))
    return " ".join(out)


def conclusion_only(f: Findings, rng: np.random.Generator) -> str:
    """Only a numbered CONCLUSION list; each lesion as '<size> <margin> <noun> <density>, <lobe>'."""
    items = []
    for m in measure_all(f, rng):
        w, lobe = lesion_words(m, rng, H), lobe_words(m.lobe, rng, ("segment", "of-lung", "abbr"))
        size = size_text(m, pick(rng, ("cm", "axb", "mm-adj")))
        tail = pick(rng, ("", "; recommend short-interval follow-up", "; tissue sampling could be considered"))
        items.append(capitalize(f"{size} {w['mg']} {w['d']} {w['n']}, {lobe}{tail}."))
    if f.effusion:
        items.append(capitalize(effusion_phrase(f.effusion, rng, H) + "."))
    if f.emphysema:
        items.append(capitalize(emphysema_phrase(f.emphysema, rng, H) + "."))
    items += _negations(f, rng, H, p=0.5)
    if f.is_normal:
        items.append(pick(rng, NORMAL[H]))
    return "\n".join(["CONCLUSION:", *numbered(items)])


TRAIN = {"en.sectioned": sectioned, "en.organ_headers": organ_headers, "en.narrative": narrative,
         "en.terse": terse, "en.measurement_first": measurement_first, "en.key_value": key_value,
         "en.technique_first": technique_first}
HELDOUT = {"en.lung_by_lung": lung_by_lung, "en.anaphoric": anaphoric, "en.conclusion_only": conclusion_only}
