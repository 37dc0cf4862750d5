"""Report text for the rule reader (`medgen.reader.grammar`): language, tokens, sentences, clauses and sections.

- Language: "zh" when the report has Chinese characters (code-mixed reports keep English abbreviations: RUL, GGN),
  "en" when it is written in the Latin alphabet and uses English words, else None (the reader warns).
- Tokens: English with spaCy's rule-based tokenizer (`spacy.blank("en")`: no model download); Chinese one token per
  character (runs of ASCII letters or digits stay whole), so no word-segmentation dictionary is needed.
- Sentences end at '.', '!', '。', '！' and line ends (not at a decimal point: 3.5); clauses also end at ',', ';',
  '，', '；' (not at a decimal comma: 2,5).
- Sections open at a heading (`rules/sections.json`): a line-opening label ending in ':' / '：' / '】', a known heading
  alone on its line, or an English FINDINGS / IMPRESSION heading after a sentence end on the same line. A history or
  technique heading labels its own line only ('History: cough.' then un-headed findings on the next line).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

RULES_DIR = resources.files("medgen.reader") / "rules"
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN = re.compile(r"[A-Za-z]")
_ENGLISH_WORDS = re.compile(
    r"\b(?:the|of|and|in|is|are|was|were|no|not|with|without|a|an|there|at|on|to|for|or|seen|noted|left|right|both|"
    r"upper|lower|middle|lobe|lobes|segment|lung|lungs|nodule|nodules|mass|lesion|opacity|effusion|effusions|"
    r"emphysema|chest|pleural|small|large|mild|moderate|severe|findings|impression|conclusion|measuring|measures|"
    r"normal|unremarkable|clear|heart|size|stable|new|recommend|follow|rul|rml|rll|lul|lll)\b", re.IGNORECASE)
# function words of other languages written in the Latin alphabet (French, German, Spanish, Italian, Portuguese,
# Dutch): a report with more of them than English function words is not English
_FOREIGN_WORDS = re.compile(r"\b(?:de|le|la|les|des|du|dans|et|une|pas|sur|avec|der|die|das|und|im|mit|kein|keine|"
                            r"ist|eine|einer|el|los|las|del|con|sin|por|una|della|nel|sem|een|geen)\b", re.IGNORECASE)
_ENGLISH_FUNCTION = re.compile(r"\b(?:the|of|and|in|is|are|was|were|no|with|without|a|an|there|at|on|to|for|or)\b",
                               re.IGNORECASE)
SENTENCE_END = re.compile(r"\.(?!\d)|[!。！]|\?(?=\s|$)|\n")
CLAUSE_END = re.compile(r",(?!\d)|[;，；]")
# a label naming a finding is a field of a structured report, not a section heading
_FIELD_LABEL = re.compile(r"nodul|mass|lesion|effusion|emphysema|opacit|fluid|collection|size|location|type|margin|"
                          r"lobe|lingula|segment|\b(?:rul|rml|rll|lul|lll)\b|"
                          r"结节|积液|胸水|气肿|肿块|病灶|大小|[上中下]叶|[上中下]肺|舌段|\w段")
_ZH_TOKEN = re.compile(r"[\u4e00-\u9fff]|[A-Za-z]+|\d+(?:\.\d+)?|\S")


def load_rules(name: str) -> dict:
    """A rule file of `medgen/reader/rules` (JSON)."""
    return json.loads((RULES_DIR / name).read_text(encoding="utf-8"))


def detect_language(text: str) -> str | None:
    """'zh', 'en' or None (another language or script)."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    if cjk >= 2 and cjk * 8 >= latin:  # code-mixed Chinese keeps English words
        return "zh"
    words, hits = len(re.findall(r"[A-Za-z]+", text)), len(_ENGLISH_WORDS.findall(text))
    foreign = len(_FOREIGN_WORDS.findall(text))
    letters = len(re.sub(r"[\s\d.,:;()\-×x/]", "", text))
    if latin >= 0.5 * letters and hits >= 2 and hits * 6 >= words and (foreign < 2 or foreign <= len(_ENGLISH_FUNCTION.findall(text))):
        return "en"
    return None


@functools.lru_cache(maxsize=1)
def _spacy_en():
    import spacy

    return spacy.blank("en")


def tokenize(text: str, language: str):
    """Token character spans [(start, end)], and the spaCy `Doc` for English (None for Chinese)."""
    if language == "en":
        doc = _spacy_en()(text)
        return [(t.idx, t.idx + len(t.text)) for t in doc if not t.is_space], doc
    return [(m.start(), m.end()) for m in _ZH_TOKEN.finditer(text)], None


def segment_ids(text: str, *ends: re.Pattern) -> np.ndarray:
    """Per character (and one past the end): how many segment ends (`ends` matches) come before it."""
    ids = np.zeros(len(text) + 1, dtype=np.int64)
    for pattern in ends:
        for match in pattern.finditer(text):
            ids[match.end():] += 1
    return ids


@dataclass
class Section:
    start: int  # the heading's first character (0 for the text before any heading)
    body: int  # first character after the heading
    category: str  # findings / impression / history / technique / comparison / other_organ
    heading: str


@dataclass
class Segments:
    """Where a report's sentences, clauses and sections are (ids per character, one past the end included)."""

    sentence: np.ndarray
    clause: np.ndarray
    section: np.ndarray
    sections: list[Section]

    def section_of(self, pos: int) -> Section:
        return self.sections[int(self.section[pos])]


@functools.lru_cache(maxsize=2)
def _heading_patterns(language: str) -> tuple[re.Pattern, dict[str, str]]:
    table = load_rules("sections.json")[language]
    category = {h.lower(): cat for cat, headings in table.items() for h in headings}
    names = "|".join(re.escape(h).replace(r"\ ", r"[\s/&-]+") for h in sorted(category, key=len, reverse=True))
    if language == "en":
        label = rf"(?:{names}|[A-Za-z][A-Za-z0-9 /&()-]{{0,38}}?)"
        pattern = (rf"(?:^|\n)[ \t]*(?:[-*•]\s*)?(?:\d{{1,2}}[.)]\s*)?[\[【]?\s*(?P<h>{label})\s*(?:[:：]|[\]】]|(?=\s*\n))"
                   rf"|(?<=[.!?])[ \t]+(?P<h2>findings|impressions?|conclusions?|opinion|summary)\s*[:：]")
        return re.compile(pattern, re.IGNORECASE), category
    label = rf"(?:{names}|[\u4e00-\u9fffA-Za-z]{{2,10}}?)"
    pattern = (rf"(?:^|\n)[ \t]*(?:[一二三四五六七八九十]+[、.．]|\d{{1,2}}[、.．)]|[（(][一二三四五六七八九十\d]+[）)])?\s*"
               rf"(?:[【\[]\s*(?P<b>[^】\]\n]{{1,12}})\s*[】\]]|(?P<h>{label})\s*(?:[:：]|(?=\s*\n)))")
    return re.compile(pattern, re.IGNORECASE), category


def find_sections(text: str, language: str) -> list[Section]:
    """The report's sections in order; the first starts at 0 (category 'findings' until a heading says more)."""
    pattern, category = _heading_patterns(language)
    out = [Section(0, 0, "findings", "")]
    for match in pattern.finditer(text):
        name = next(g for g in (match.groupdict().get(k) for k in ("h", "h2", "b")) if g)
        key = re.sub(r"[\s/&-]+", " ", name.strip().lower())
        cat = category.get(key) or category.get(name.strip().lower())
        if cat is None:
            if _FIELD_LABEL.search(key):
                continue  # a field of a structured report ("Nodule 1:", "Emphysema: mild"), not a section
            if match.group(0).strip().endswith(("：", ":", "】", "]")) or re.match(r"[【\[]", match.group(0).strip()):
                cat = _generic_category(key, language)
            else:
                continue  # a line that merely ends: not a heading
        start = match.start() + (len(match.group(0)) - len(match.group(0).lstrip("\n \t")))
        out.append(Section(start, match.end(), cat, name.strip()))
    return _end_fields(text, out)


def _end_fields(text: str, sections: list[Section]) -> list[Section]:
    """A history or technique heading labels one field ('History: cough.'), not the rest of the report: where its
    text ends at a line end and no heading follows, the lines after it are findings again."""
    out = []
    for k, s in enumerate(sections):
        out.append(s)
        if s.category not in ("history", "technique"):
            continue
        body = text[s.body:]
        first = re.search(r"\S", body)
        end = body.find("\n", first.start()) if first else -1
        nxt = sections[k + 1].start if k + 1 < len(sections) else len(text)
        if end >= 0 and s.body + end < nxt and text[s.body + end:nxt].strip():
            out.append(Section(s.body + end, s.body + end, "findings", ""))
    return out


@functools.lru_cache(maxsize=2)
def _organ_pattern(language: str) -> tuple[re.Pattern, dict]:
    table = load_rules("sections.json")[language]
    organs = "|".join(re.escape(h.lower()) for h in sorted(table["other_organ"], key=len, reverse=True))
    return re.compile(rf"(?<![a-z])(?:{organs})(?![a-z])"), table


def _generic_category(label: str, language: str) -> str:
    """A heading not in the table: an organ other than the lungs or pleura, or else a findings section."""
    organs, table = _organ_pattern(language)
    lungish = re.search(r"lung|pulmon|pleura|lobe|nodule|emphysema|parenchym|肺|胸膜|胸腔|结节", label)
    if not lungish and organs.search(label):
        return "other_organ"
    for cat in ("impression", "history", "technique"):
        if any(label.startswith(h.lower()) or label.endswith(h.lower()) for h in table[cat] if len(h) > 3):
            return cat
    return "findings"


def segment(text: str, language: str) -> Segments:
    sections = find_sections(text, language)
    section = np.zeros(len(text) + 1, dtype=np.int64)
    for k, s in enumerate(sections[1:], 1):
        section[s.body:] = k
    sentence = segment_ids(text, SENTENCE_END)
    for s in sections[1:]:  # a heading ends the sentence before it ("... effusion IMPRESSION: ...")
        sentence[s.body:] += 1
    clause = segment_ids(text, SENTENCE_END, CLAUSE_END)
    for s in sections[1:]:
        clause[s.body:] += 1
    return Segments(sentence, clause, section, sections)
