"""Step 1 of reading a report: the tagger's per-token label probabilities -> tagged character spans.

Consecutive tokens whose best label in a group (anchors les/eff/emph, size, loc, type, ...) is above threshold
form one span (anchors also split where their assertion changes); a span's value is the label with the highest
mean probability over its tokens. Token probabilities are first pooled over each word's sub-word pieces ("fl"
"##uid" read as one word). A size span loses a list item's number it was cut with ("[1. 2.9 cm]") and is
widened over the number before it when the tagger cut it short ("35 [mm]").
`medgen.reader.assemble` turns the spans into findings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from medgen.reader.labels import GROUPS, LABELS
from medgen.reader.sizes import NUMBER_WORDS, parse_size_mm

THRESHOLD = 0.5
# a number (digits, English number words, Chinese numerals) with its separators, just before a size span that
# holds only a unit ("35 [mm]", "twelve [millimeters]", "3.5 x 2.8 [cm]")
_NUMBER_TOKEN = r"(?:\d+(?:[.,]\d+)?|[零〇一二两三四五六七八九十点]+|\b(?:" + "|".join(NUMBER_WORDS) + r")\b)"
_NUMBER_BEFORE = re.compile(  # separators unambiguous (no nested optional whitespace): linear matching
    _NUMBER_TOKEN + r"(?:(?:\s*(?:[x×*]|by|to|-)\s*|\s+)" + _NUMBER_TOKEN + r")*\s*$", re.IGNORECASE)
# a list item's number ("1. ", "2) ", "3、") where a line or a heading ("IMPRESSION: ") begins
_LIST_NUMBER = re.compile(r"\d{1,2}(?:[.)](?=\s)|、)\s*")


@dataclass
class TaggedSpan:
    """Characters ``start:end`` of the report, tagged `group` with `value` (e.g. 'loc', 'right_upper')."""

    group: str
    value: str
    start: int
    end: int
    text: str
    score: float
    source: str = "tagger"  # "tagger", "rules", or "both" when they agree

    def to_dict(self) -> dict:
        return {"group": self.group, "value": self.value, "start": self.start, "end": self.end,
                "text": self.text, "score": round(self.score, 3), "source": self.source}


def decode_spans(text: str, probs: np.ndarray, offsets: list[tuple[int, int]]) -> list[TaggedSpan]:
    """Spans from per-token probabilities (n_tokens, len(LABELS)); tokens with empty offsets are skipped."""
    probs = _pool_words(text, probs, offsets)
    spans: list[TaggedSpan] = []
    for group, columns in GROUPS.items():
        sub = probs[:, columns]
        best = sub.argmax(1)
        on = sub.max(1) > THRESHOLD
        run: list[int] = []
        for t in range(len(offsets) + 1):
            active = t < len(offsets) and offsets[t][1] > offsets[t][0] and on[t]
            same = (active and run and best[t] == best[run[-1]]) if group in ("les", "eff", "emph") else active
            if run and not (active and (same or not run)):
                spans.append(_span(text, group, columns, sub, run, offsets))
                run = []
            if active:
                run.append(t)
    spans = [_size_span(text, s) if s.group == "size" else s for s in spans]
    return sorted((s for s in spans if s is not None), key=lambda s: (s.start, s.group))


def _word_char(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _pool_words(text: str, probs: np.ndarray, offsets: list[tuple[int, int]]) -> np.ndarray:
    """Mean probabilities over the sub-word pieces of each (ASCII) word, so a word is tagged as a whole."""
    out = probs.copy()
    start = 0
    for t in range(1, len(offsets) + 1):
        joined = (t < len(offsets) and offsets[t][0] == offsets[t - 1][1] > offsets[t - 1][0]
                  and offsets[t][1] > offsets[t][0] and _word_char(text[offsets[t][0]])
                  and _word_char(text[offsets[t - 1][1] - 1]))
        if not joined:
            if t - start > 1:
                out[start:t] = probs[start:t].mean(0)
            start = t
    return out


def _size_span(text: str, span: TaggedSpan) -> TaggedSpan | None:
    """A size span without the list number it was cut with ("[1. 2.9 cm]" of a numbered list), widened over
    the number before it when it holds none ("35 [mm]"); None when only a list number was tagged ("[3]. ...")."""
    start = span.start
    while start < span.end and not (text[start].isalnum() or text[start] == "."
                                    and start + 1 < span.end and text[start + 1].isdigit()):
        start += 1  # punctuation and line breaks the span began with (".\n2. 1.1 cm")
    if start == span.end:
        return _widen_size(text, span)
    before = text[max(0, start - 80):start].rstrip(" \t")
    line_start = before[-1:] in ("\n", ":", "：") or (not before and start <= 80)
    item = _LIST_NUMBER.match(text, start) if line_start else None
    if item is not None:
        if item.end() >= span.end:
            return None
        start = item.end()
    if start != span.start:
        span = TaggedSpan(span.group, span.value, start, span.end, text[start:span.end], span.score, span.source)
    return _widen_size(text, span)


def _widen_size(text: str, span: TaggedSpan) -> TaggedSpan:
    """A size span with no number in it ("mm" of "35 mm") takes in the number written just before it."""
    if parse_size_mm(span.text) is not None:
        return span
    window = max(0, span.start - 60)  # a size is written just before its unit
    match = _NUMBER_BEFORE.search(text[window:span.start])
    if match is None:
        return span
    start = window + match.start()
    return TaggedSpan(span.group, span.value, start, span.end, text[start:span.end], span.score, span.source)


def _span(text, group, columns, sub, run, offsets) -> TaggedSpan:
    mean = sub[run].mean(0)
    label = LABELS[columns[int(mean.argmax())]]
    value = label.split("=", 1)[1] if "=" in label else label[len(group):] or "+"
    start, end = offsets[run[0]][0], offsets[run[-1]][1]
    return TaggedSpan(group, value, start, end, text[start:end], float(mean.max()))
