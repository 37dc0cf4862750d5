"""The rule reader's vocabulary (`rules/targets_en.json`, `rules/targets_zh.json`) compiled into regular expressions.

A phrase entry matches as a whole word (English: no ASCII letter or digit on either side; Chinese: ASCII entries
such as 'GGN' keep that boundary, Chinese ones match anywhere); a space or hyphen in an English entry matches any
run of spaces and hyphens ('ground glass' = 'ground-glass' = 'groundglass'). An entry starting with 're:' is a
regular expression. Where entries overlap, the longest match wins.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from medgen.reader.text import load_rules

_FLAGS = re.IGNORECASE
# vocabulary that Chinese reports borrow from English
MIXED_KEYS = ("lesion", "lesion_plural", "effusion", "emphysema", "type", "component", "margin", "effusion_grade",
              "emphysema_grade", "not_lung")


@dataclass(frozen=True)
class Match:
    start: int
    end: int
    value: str  # the label ('part-solid', 'left', ...) or the matched kind
    text: str


def phrase_pattern(entries, language: str) -> re.Pattern:
    """One pattern for a list of phrase entries, longest first (word entries share one pair of boundaries)."""
    words, others = [], []
    for entry in sorted(set(entries), key=len, reverse=True):
        if entry.startswith("re:"):
            others.append(entry[3:])
        elif language == "en" or re.fullmatch(r"[A-Za-z0-9 -]+", entry):
            words.append(r"[\s-]*".join(re.escape(w) for w in re.split(r"[\s-]+", entry.strip()) if w))
        else:
            others.append(re.escape(entry))
    parts = ([r"(?<![A-Za-z0-9])(?:" + "|".join(words) + r")(?![A-Za-z])"] if words else []) + others
    return re.compile("|".join(f"(?:{p})" for p in parts) or r"(?!)", _FLAGS)


class Lexicon:
    """Compiled vocabulary of one language: `pattern(key)` for a phrase list, `labeled(key)` for a value table."""

    def __init__(self, language: str):
        self.language = language
        self.data = load_rules(f"targets_{language}.json")
        if language == "zh":  # code-mixed Chinese reports write findings in English too ("RLL见一混合密度mass")
            english = load_rules("targets_en.json")
            for key in MIXED_KEYS:
                if isinstance(self.data[key], dict):
                    self.data[key] = {v: [*self.data[key][v], *english[key][v]] for v in self.data[key]}
                else:
                    self.data[key] = [*self.data[key], *english[key]]
        self._patterns: dict[str, re.Pattern] = {}
        self._labeled: dict[str, list[tuple[str, re.Pattern]]] = {}
        self._cache: dict[tuple, list[Match]] = {}

    def pattern(self, key: str) -> re.Pattern:
        if key not in self._patterns:
            self._patterns[key] = phrase_pattern(self.data[key], self.language)
        return self._patterns[key]

    def labeled(self, key: str) -> list[tuple[str, re.Pattern]]:
        if key not in self._labeled:
            self._labeled[key] = [(value, phrase_pattern(entries, self.language))
                                  for value, entries in self.data[key].items()]
        return self._labeled[key]

    def find(self, key: str, text: str, start: int = 0, end: int | None = None) -> list[Match]:
        """Non-overlapping matches of a phrase list (value = key) or a value table (value = the label)."""
        end = len(text) if end is None else end
        cache_key = (key, text, start, end)
        if cache_key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[cache_key] = self._find(key, text, start, end)
        return self._cache[cache_key]

    def _find(self, key: str, text: str, start: int, end: int) -> list[Match]:
        table = self.data[key]
        if isinstance(table, dict):
            found = [Match(m.start(), m.end(), value, m.group(0)) for value, pattern in self.labeled(key)
                     for m in pattern.finditer(text, start, end)]
        else:
            found = [Match(m.start(), m.end(), key, m.group(0)) for m in self.pattern(key).finditer(text, start, end)]
        return longest_first(found)

    def has(self, key: str, text: str, start: int = 0, end: int | None = None) -> bool:
        return bool(self.find(key, text, start, end))


def longest_first(found: list[Match]) -> list[Match]:
    """Keep the longest of overlapping matches (the earlier one on a tie), sorted by position."""
    kept: list[Match] = []
    for m in sorted(found, key=lambda m: (-(m.end - m.start), m.start)):
        if m.end > m.start and all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: m.start)


@functools.lru_cache(maxsize=2)
def lexicon(language: str) -> Lexicon:
    return Lexicon(language)
