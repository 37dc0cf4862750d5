"""ConText assertion for the rule reader: is a finding word negated, only possible, historical or hypothetical?

The ConText algorithm (Harkema et al. 2009, as in medspaCy): modifier phrases (`rules/context_en.json`,
`rules/context_zh.json`) each cover a scope of the sentence — FORWARD (after the phrase), BACKWARD (before it) or
BIDIRECTIONAL — and every target (finding word) inside a modifier's scope takes its category. Overlapping modifier
phrases keep the longest, so a PSEUDO phrase ('no change', '无明显变化') silences the trigger word it contains.
A scope ends at the end of the clause; in English a FORWARD scope goes on across commas over a list that a
coordinator closes ('No nodule, effusion or emphysema'). It also stops at a TERMINATE phrase ('but', '但') and after
max_scope tokens where a rule sets one, and at another modifier of its own category ('考虑MIA可能': 可能 hedges
'MIA', not the nodule before 考虑); a modifier of another category does not end it ('No suspicious nodule').

English modifiers are matched on spaCy tokens (`spacy.matcher.PhraseMatcher` / `Matcher` on lower-case text of
`spacy.blank("en")`: no model download); Chinese ones on the character sequence (one token per character).
medspaCy itself is not used: its release for Python < 3.12 pins spaCy < 3.8, whose thinc needs numpy < 2, and it
installs medspacy_quickumls with it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from medgen.reader.text import Segments, load_rules

CATEGORIES = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HISTORICAL", "HYPOTHETICAL")
# what a clause that only names a place may also hold
_FILLER = re.compile(r"[\s,，;；:：、()（）]|\b(?:in|at|of|the|within|on|by|or|is|are|was|were|be|been|sorry|"
                     r"correction|i\s+mean|rather)\b|应为|更正为?|位于|于|在|见", re.IGNORECASE)
_SIZE_LIKE = re.compile(r"\d+(?:\.\d+)?\s*(?:[x×*]\s*\d+(?:\.\d+)?\s*)*(?:mm|cm|毫米|厘米)?|"
                        r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
                        r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|"
                        r"ninety|point)\b|millimet(?:er|re)s?|centimet(?:er|re)s?|amended|to|-+", re.IGNORECASE)
_COORDINATOR = re.compile(r"\b(?:or|nor|and)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Modifier:
    start: int
    end: int
    category: str
    direction: str
    max_scope: int | None
    text: str


@dataclass(frozen=True)
class _Rule:
    category: str
    direction: str
    max_scope: int | None


@functools.lru_cache(maxsize=1)
def _en_matchers():
    from spacy.matcher import Matcher, PhraseMatcher

    from medgen.reader.text import _spacy_en

    nlp = _spacy_en()
    phrases, patterns = PhraseMatcher(nlp.vocab, attr="LOWER"), Matcher(nlp.vocab)
    rules: dict[str, _Rule] = {}
    for i, rule in enumerate(load_rules("context_en.json")["rules"]):
        key = f"r{i}"
        rules[key] = _Rule(rule["category"], rule["direction"], rule.get("max_scope"))
        if "literal" in rule:
            phrases.add(key, [nlp.make_doc(rule["literal"])])
        else:
            patterns.add(key, [rule["pattern"]])
    return nlp, phrases, patterns, rules


@functools.lru_cache(maxsize=1)
def _zh_rules() -> tuple[re.Pattern, dict[str, _Rule]]:
    rules = {r["literal"]: _Rule(r["category"], r["direction"], r.get("max_scope"))
             for r in load_rules("context_zh.json")["rules"]}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(rules, key=len, reverse=True)))
    return pattern, rules


def find_modifiers(text: str, language: str, doc=None) -> list[Modifier]:
    """Modifier phrases in the text, overlaps resolved (longest first); PSEUDO phrases are dropped after they
    have blocked the triggers inside them."""
    found: list[Modifier] = []
    if language == "en":
        nlp, phrases, patterns, rules = _en_matchers()
        doc = doc if doc is not None else nlp.make_doc(text)
        for match_id, s, e in [*phrases(doc), *patterns(doc)]:
            rule = rules[nlp.vocab.strings[match_id]]
            start, end = doc[s].idx, doc[e - 1].idx + len(doc[e - 1].text)
            found.append(Modifier(start, end, rule.category, rule.direction, rule.max_scope, text[start:end]))
    else:
        pattern, rules = _zh_rules()
        for i in range(len(text)):  # every start: a shorter phrase may sit inside a longer one's text
            m = pattern.match(text, i)
            if m:
                rule = rules[m.group(0)]
                found.append(Modifier(m.start(), m.end(), rule.category, rule.direction, rule.max_scope, m.group(0)))
    kept: list[Modifier] = []
    for m in sorted(found, key=lambda m: (-(m.end - m.start), m.start)):
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted((m for m in kept if m.category != "PSEUDO"), key=lambda m: m.start)


def _token_starts(tokens: list[tuple[int, int]]) -> list[int]:
    return [s for s, _ in tokens]


def scopes(text: str, language: str, modifiers: list[Modifier], segments: Segments, tokens: list[tuple[int, int]],
           targets: list[tuple[int, int]], places: list[tuple[int, int]] = ()) -> list[tuple[Modifier, int, int]]:
    """(modifier, scope start, scope end) character ranges; a BIDIRECTIONAL modifier gives one range over both
    sides of it. A backward scope reaches back over clauses that name no target to the nearest one that does
    ('A part-solid opacity in the LUL, correction, LLL, cannot be excluded'); a forward scope over a clause that
    holds nothing but a place (`places`: lobe phrases) goes on to the next one ('Possibly in the right lower lobe,
    a nodule', '不除外右肺中叶，应为左肺上叶前段结节影')."""
    starts = _token_starts(tokens)
    out = []
    for k, m in enumerate(modifiers):
        if m.direction == "TERMINATE":
            continue
        lo, hi = m.start, m.end
        if m.direction in ("FORWARD", "BIDIRECTIONAL"):
            hi = _forward_end(text, language, m, segments, targets, places)
            later = [o.start for o in modifiers[k + 1:] if o.start >= m.end and o.category in ("TERMINATE", m.category)]
            hi = min([hi, *later])
            if m.max_scope:
                after = [s for s in starts if s >= m.end]
                if len(after) > m.max_scope:
                    hi = min(hi, after[m.max_scope])
        if m.direction in ("BACKWARD", "BIDIRECTIONAL"):
            lo = _backward_start(text, m, segments, targets, places)
            earlier = [o.end for o in modifiers[:k] if o.end <= m.start and o.category in ("TERMINATE", m.category)]
            lo = max([lo, *earlier])
            if m.max_scope:
                before = [s for s in starts if s < m.start]
                if len(before) > m.max_scope:
                    lo = max(lo, before[-m.max_scope])
        out.append((m, lo, hi))
    return out


def _forward_end(text: str, language: str, m: Modifier, segments: Segments, targets, places) -> int:
    """End of a forward scope: the clause's end, or further over a list ('no A, B or C') in English."""
    clause, sentence = segments.clause, segments.sentence
    end, lo = m.end, m.end
    while True:
        while end < len(text) and clause[end] == clause[lo]:
            end += 1
        named_place = any(a < end and b > lo for a, b in places)  # a modifier that ends its clause names none
        if (not named_place or not _bare(text, lo, end, places) or end >= len(text)
                or sentence[end] != sentence[m.end] or any(lo <= s < end for s, _ in targets)):
            break
        lo = end  # the clause held only a place: the target is in the next one
    if language != "en":
        return end
    while end < len(text) and sentence[end] == sentence[m.end]:
        nxt = end
        while nxt < len(text) and clause[nxt] == clause[end]:
            nxt += 1
        rest = text[end:_sentence_end(sentence, end, len(text))]
        item = text[end:nxt]
        if not _COORDINATOR.search(rest) or re.search(r"\d", item) or len(item.split()) > 6:
            break
        end = nxt
    return end


def _backward_start(text: str, m: Modifier, segments: Segments, targets, places) -> int:
    clause, sentence = segments.clause, segments.sentence
    lo = m.start
    while lo > 0 and clause[lo - 1] == clause[m.start]:
        lo -= 1
    while lo > 0 and sentence[lo - 1] == sentence[m.start] and not any(lo <= s < m.start for s, _ in targets):
        if _bare(text, lo, m.start, places):
            start = lo - 1  # the clause before
            while start > 0 and clause[start - 1] == clause[lo - 1]:
                start -= 1
            lo = start
        else:
            break
    return lo


def _bare(text: str, lo: int, hi: int, places) -> bool:
    """Whether text[lo:hi] holds nothing but places, sizes, a correction and filler words."""
    rest = list(text[lo:hi])
    for a, b in places:
        if b > lo and a < hi:
            rest[max(a, lo) - lo:min(b, hi) - lo] = " " * (min(b, hi) - max(a, lo))
    return not _FILLER.sub("", _SIZE_LIKE.sub("", "".join(rest)))


def _sentence_end(sentence, pos: int, n: int) -> int:
    end = pos
    while end < n and sentence[end] == sentence[pos]:
        end += 1
    return end


def assertions(targets: list[tuple[int, int]], spans: list[tuple[Modifier, int, int]]) -> list[dict[str, Modifier]]:
    """Per target: category -> the modifier whose scope covers it (targets and modifiers never overlap:
    a target inside a modifier's own words is not in its scope)."""
    out = []
    for start, end in targets:
        found: dict[str, Modifier] = {}
        for m, lo, hi in spans:
            if start < hi and end > lo and not (start < m.end and end > m.start):
                found.setdefault(m.category, m)
        out.append(found)
    return out


def certainty(found: dict[str, Modifier]) -> str:
    """'-' (negated, historical or hypothetical: not a current finding), '?' (possible) or '+' (affirmed)."""
    if found.keys() & {"NEGATED_EXISTENCE", "HISTORICAL", "HYPOTHETICAL"}:
        return "-"
    return "?" if "POSSIBLE_EXISTENCE" in found else "+"
