"""The rule reader: a report's finding words, their assertion and the words that describe them, as `TaggedSpan`s in
the tagger's vocabulary (`medgen.reader.labels`), so that `medgen.reader.assemble` builds findings from either.

1. Language, tokens, sentences, clauses and sections (`medgen.reader.text`); sites (`medgen.reader.sites`).
2. Targets: lesion, effusion and emphysema words (`rules/targets_*.json`). Not lung findings: a lesion word in a
   clause about another organ that names no lung site ('hypodense lesion in the liver', '甲状腺右叶见低密度结节'),
   an effusion named with the pericardium and not the pleura, subcutaneous or mediastinal emphysema, anything in
   a history or technique section, and lesions or effusions in another organ's section ('Upper abdomen:').
   A plural lesion word with no size in its clause ('millimetric nodules in both lungs') is not one lesion.
3. Assertion (`medgen.reader.context`, ConText): negated, historical and hypothetical targets are '-', possible
   ones '?', others '+'. A lesion named again in an impression after a findings section, or 'as above', is
   restated ('^'). 'X suspicious for / possibly Y' with two lesion words names one lesion: Y, hedged.
4. Attributes (`medgen.reader.attributes`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from medgen.reader import attributes
from medgen.reader.context import assertions, certainty, find_modifiers, scopes
from medgen.reader.decode import TaggedSpan
from medgen.reader.lexicon import Match, lexicon, longest_first
from medgen.reader.sites import find_sites, resolve_sides
from medgen.reader.sizes import find_sizes
from medgen.reader.text import Segments, detect_language, segment, tokenize

_PLEURAL = re.compile(r"pleura|hemithora|胸腔|胸膜|胸水", re.IGNORECASE)
_NOT_EMPHYSEMA = re.compile(r"subcutaneous|mediastinal|interstitial|surgical|soft[\s-]*tissue|皮下|纵隔|间质",
                            re.IGNORECASE)
_NOT_LESION_AFTER = re.compile(r"\s*(?:effect|of\s+(?:consolidation|atelectasis|air|fat|fluid|calcification|"
                               r"scarring|fibrosis|infection|inflammation))\b", re.IGNORECASE)
KIND_OF = {"lesion": "les", "effusion": "eff", "emphysema": "emph"}
_SENTENCE_OPENING = re.compile(r"[\s\-*•\d.)、]*(?:the\s+)?", re.IGNORECASE)  # before a sentence's first word


@dataclass
class Target:
    kind: str  # les / eff / emph
    start: int
    end: int
    text: str
    plural: bool = False  # a plural lesion word with no size in its clause: not one lesion
    plural_word: bool = False
    assertion: str = "+"
    why: dict = field(default_factory=dict)  # category -> modifier words


@dataclass
class RuleReading:
    """What the rules read: spans (source 'rules'), vetoes (character ranges the rules read as no finding or as
    no attribute of one: (start, end, groups, why)), the language (None: unknown) and whether the report speaks
    about the chest at all."""

    language: str | None
    spans: list[TaggedSpan]
    vetoes: list[tuple[int, int, tuple[str, ...], str]]
    targets: list[Target]
    chest: bool
    negated: list[tuple[int, int]] = field(default_factory=list)  # character ranges under a negation


def read_rules(text: str) -> RuleReading:
    language = detect_language(text)
    if language is None:
        return RuleReading(None, [], [], [], chest=False)
    lex = lexicon(language)
    tokens, doc = tokenize(text, language)
    seg = segment(text, language)
    sites = resolve_sides(find_sites(text, language), lambda p: int(seg.sentence[p]))
    sizes = find_sizes(text)
    vetoes: list[tuple[int, int, tuple[str, ...], str]] = []
    targets = _targets(text, lex, seg, sites, sizes, vetoes)
    modifiers = find_modifiers(text, language, doc)
    scoped = scopes(text, language, modifiers, seg, tokens, [(t.start, t.end) for t in targets],
                    [(s.start, s.end) for s in sites])
    found = assertions([(t.start, t.end) for t in targets], scoped)
    for target, mods in zip(targets, found, strict=True):
        target.assertion = certainty(mods)
        target.why = {category: m.text for category, m in mods.items()}
    targets = _appositions(targets, modifiers, seg)
    targets = _listed(text, targets, sites, sizes, seg)
    _restated(text, targets, seg, lex)
    targets = [t for t in targets if not (t.plural and t.assertion != "-")]
    anchors = [TaggedSpan(t.kind, t.assertion, t.start, t.end, t.text, 1.0, "rules") for t in targets]
    negated = [(lo, hi) for m, lo, hi in scoped if m.category == "NEGATED_EXISTENCE"]
    spans = anchors + attributes.attribute_spans(text, lex, seg, sites, sizes, targets, vetoes, negated)
    spans += [TaggedSpan("norm", "+", m.start, m.end, m.text, 1.0, "rules") for m in lex.find("normal", text)]
    return RuleReading(language, sorted(spans, key=lambda s: (s.start, s.group)), vetoes, targets,
                       chest=lex.has("chest", text), negated=negated)


def _targets(text: str, lex, seg: Segments, sites, sizes, vetoes) -> list[Target]:
    found = longest_first([Match(m.start, m.end, kind, m.text) for kind in KIND_OF for m in lex.find(kind, text)])
    plural = {(m.start, m.end) for m in lex.find("lesion_plural", text)}
    organ = lex.find("not_lung", text)
    sized_clauses = {int(seg.clause[s]) for s, _, _ in sizes}
    site_clauses = {int(seg.clause[s.start]) for s in sites if s.zone}
    out = []
    for m in found:
        kind = KIND_OF[m.value]
        section = seg.section_of(m.start)
        clause = int(seg.clause[m.start])
        why = _excluded(text, kind, m, section.category, clause, organ, site_clauses, seg)
        if why:
            vetoes.append((*_clause_range(seg, m.start, len(text)), (kind,) if kind != "les" else
                           ("les", "size", "loc", "type", "margin"), why))
            continue
        if kind == "les" and _anaphoric(text, lex, m, seg, sites):
            continue  # "The nodule measures 9 mm.", "此结节大小约12mm": the lesion named before, described further
        weak = [w for w in lex.find("lesion_weak", text, m.start, m.end) if (w.start, w.end) == (m.start, m.end)]
        if kind == "les" and weak and not _weak_is_lesion(text, lex, m, seg, sizes):
            vetoes.append((m.start, m.end, ("les",), "an opacity that is no nodule or mass"))
            continue
        word = any(m.start <= s < m.end or s <= m.start < e for s, e in plural)
        out.append(Target(kind, m.start, m.end, m.text, plural=word and clause not in sized_clauses, plural_word=word))
    return out


def _weak_is_lesion(text: str, lex, m: Match, seg: Segments, sizes) -> bool:
    """A word that names a lesion only sometimes ('opacity', 'focus', '磨玻璃影', '病灶') does when it is measured (in
    its sentence or the next, which goes on about it) and no word before it in its clause says what else it is
    ('patchy', 'linear', 'airspace', '斑片状', '条索')."""
    lo = m.start
    while lo > 0 and seg.clause[lo - 1] == seg.clause[m.start] and m.start - lo < 30:
        lo -= 1
    if lex.has("not_lesion_qualifier", text, lo, m.start):
        return False
    sentence = int(seg.sentence[m.start])
    if any(int(seg.sentence[s]) == sentence for s, _, _ in sizes):
        return True
    lo, hi = (int(i) for i in np.searchsorted(seg.sentence[:len(text)], [sentence + 1, sentence + 2]))
    named = lex.find("lesion", text, lo, hi)  # the next sentence measures it, unless it names a lesion of its own
    own = named and not _SENTENCE_OPENING.fullmatch(text[lo:named[0].start]) and \
        not any(d in text[max(lo, named[0].start - 6):named[0].start].lower() for d in lex.data["determiner"])
    return hi > lo and any(lo <= s < hi for s, _, _ in sizes) and not own


def _anaphoric(text: str, lex, m: Match, seg: Segments, sites) -> bool:
    """A lesion word after a determiner ('the', 'this', '该', '此') in a sentence that names no lobe."""
    sentence = seg.sentence[m.start]
    if any(seg.sentence[s.start] == sentence and s.zone for s in sites):
        return False
    lo = m.start
    while lo > 0 and seg.clause[lo - 1] == seg.clause[m.start]:
        lo -= 1
    before = text[lo:m.start]
    if _SENTENCE_OPENING.fullmatch(before) and lo > 0 and seg.sentence[lo] == sentence and _after_lesion(text, lex, lo):
        return True  # "病灶大小约27mm。", "Lesion measures 2 cm.": a bare lesion noun opening the next sentence
    if lex.language == "en":
        words = re.findall(r"[A-Za-z]+", before)[-4:]
        return any(w.lower() in lex.data["determiner"] for w in words)
    return any(d in before[-4:] for d in lex.data["determiner"])


def _after_lesion(text: str, lex, pos: int) -> bool:
    """Whether the sentence just before `pos` (on the same line) names a lesion."""
    line = text.rfind("\n", 0, pos) + 1
    return bool(lex.find("lesion", text, line, pos))


def _excluded(text, kind, m, category, clause, organ, site_clauses, seg) -> str | None:
    """Why a finding word is not a lung finding (None when it is one)."""
    if category in ("history", "technique"):
        return f"in a {category} section"
    if category == "other_organ" and kind != "emph":
        return "in another organ's section"
    here = [o for o in organ if int(seg.clause[o.start]) == clause]
    if kind == "les":
        if _NOT_LESION_AFTER.match(text, m.end):
            return "not a lesion ('mass effect', 'focus of consolidation')"
        if here and clause not in site_clauses:
            return f"about another organ ({here[0].text!r})"
    elif kind == "eff":
        near = [o for o in here if o.end <= m.start and m.start - o.end <= 25]
        if near and not _PLEURAL.search(text, near[-1].start, m.end):
            return f"not pleural ({near[-1].text!r})"
    elif _NOT_EMPHYSEMA.search(text[max(0, m.start - 16):m.start]):
        return "not pulmonary emphysema"
    return None


def _clause_range(seg: Segments, pos: int, n: int) -> tuple[int, int]:
    clause = seg.clause[pos]
    lo, hi = pos, pos
    while lo > 0 and seg.clause[lo - 1] == clause:
        lo -= 1
    while hi < n and seg.clause[hi] == clause:
        hi += 1
    return lo, hi


def _listed(text: str, targets: list[Target], sites, sizes, seg: Segments) -> list[Target]:
    """'Nodules: 4 mm RUL, 6 mm LLL.', '双肺多发结节：右肺上叶约4mm，左肺下叶约6mm': after a plural lesion word, each
    clause of its sentence that gives a lobe and a size and names no finding is one lesion."""
    out = list(targets)
    for t in targets:
        if t.kind != "les" or not t.plural_word or t.assertion == "-":
            continue
        named = {int(seg.clause[x.start]) for x in targets}
        for site in sites:
            clause = int(seg.clause[site.start])
            if (site.zone and seg.sentence[site.start] == seg.sentence[t.start] and site.start > t.start
                    and clause not in named and any(int(seg.clause[s]) == clause for s, _, _ in sizes)):
                out.append(Target("les", site.start, site.end, site.text, assertion=t.assertion, why=dict(t.why)))
                named.add(clause)
    return sorted(out, key=lambda x: x.start)


def _appositions(targets: list[Target], modifiers, seg: Segments) -> list[Target]:
    """'opacity suspicious for a nodule', '结节影，考虑小结节可能' name one lesion: the first word is dropped and the
    hedged second one stands for it."""
    drop = set()
    for i, a in enumerate(targets):
        if a.kind != "les" or a.assertion == "-":
            continue
        for b in targets[i + 1:]:
            if b.kind != "les" or seg.sentence[b.start] != seg.sentence[a.start] or b.assertion != "?":
                continue
            between = [m for m in modifiers if a.end <= m.start and m.end <= b.start
                       and m.category == "POSSIBLE_EXISTENCE"]
            if between and seg.clause[b.start] - seg.clause[a.start] <= 1:
                drop.add(id(a))
                break
    return [t for t in targets if id(t) not in drop]


def _restated(text: str, targets: list[Target], seg: Segments, lex) -> None:
    """Lesions named again in an impression (after a findings section that named lesions) or 'as above'."""
    seen_sections: set[int] = set()
    by_section = defaultdict(list)
    for t in targets:
        by_section[int(seg.section[t.start])].append(t)
    for t in targets:
        if t.kind != "les" or t.assertion == "-":
            continue
        section = int(seg.section[t.start])
        earlier = any(s < section and seg.sections[s].category != "impression" for s in seen_sections)
        lo, hi = _clause_range(seg, t.start, len(text))
        if (seg.sections[section].category == "impression" and earlier) or lex.has("restate", text, lo, hi):
            t.assertion = "^" if t.assertion == "+" else t.assertion
        seen_sections.add(section)
