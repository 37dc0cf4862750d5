"""Span marks: how the report writer tells the reader's training which words say what.

The writer renders ``⟦label|words⟧`` around every word group that carries a finding; `strip_marks`
returns the plain report and the character spans. Labels:

    les / les- / les?        a lesion mention, affirmed / negated or resolved / hedged
    les^                     a lesion restated (an IMPRESSION line repeating a lesion described above)
    eff / eff- / eff?        a pleural-effusion mention (likewise)
    emph / emph- / emph?     an emphysema mention (likewise)
    size                     the written size of a lesion (not of its solid part)
    loc=<lobe>               where a lesion is (a lobe of `findings.LOBES`)
    type=<type>              ground-glass / part-solid / solid
    margin=<margin>          smooth / lobulated / spiculated
    eside=<side>, egrade=<grade>          effusion side and grade
    xgrade=<grade>, xdist=upper|diffuse   emphysema grade and distribution

A mark may carry several labels separated by commas (``⟦les,type=ground-glass|GGN⟧``). Words a report
states and then corrects are left unmarked, so they read as "not the answer".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPEN, SEP, CLOSE = "⟦", "|", "⟧"
_MARK = re.compile(r"⟦([^|⟦⟧]+)\|([^⟦⟧]*)⟧")

KINDS = ("les", "eff", "emph", "size", "loc", "type", "margin", "eside", "egrade", "xgrade", "xdist")


@dataclass(frozen=True)
class Span:
    """Characters ``text[start:end]`` carry `label` (e.g. 'loc=right_upper', 'les-', 'les,type=solid')."""

    start: int
    end: int
    label: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.label.split(","))


def mark(words: str, label: str) -> str:
    """``⟦label|words⟧``; empty words stay empty (an optional phrase that was not drawn)."""
    if not words:
        return words
    if OPEN in words or CLOSE in words:
        raise ValueError(f"marks cannot nest: {words!r} already holds a mark")
    return f"{OPEN}{label}{SEP}{words}{CLOSE}"


def visible(marked: str) -> str:
    """The text a reader sees: marks removed, their words kept."""
    return _MARK.sub(lambda m: m.group(2), marked)


def strip_marks(marked: str) -> tuple[str, list[Span]]:
    """Plain text and the spans of every mark, in order.

    Raises:
        ValueError: a stray or nested bracket (a writer bug).
    """
    out, spans, pos = [], [], 0
    length = 0
    for match in _MARK.finditer(marked):
        before = marked[pos:match.start()]
        out.append(before)
        length += len(before)
        words = match.group(2)
        spans.append(Span(length, length + len(words), match.group(1)))
        out.append(words)
        length += len(words)
        pos = match.end()
    out.append(marked[pos:])
    text = "".join(out)
    if OPEN in text or CLOSE in text:
        raise ValueError(f"unbalanced span mark in {marked!r}")
    return text, spans


def label_kind(label: str) -> str:
    """'loc=right_upper' -> 'loc'; 'les-' -> 'les'."""
    return label.split("=", 1)[0].rstrip("-?")


def certainty_tag(kind: str, certainty: str) -> str:
    """'les' for a definite finding, 'les?' for a possible one."""
    return kind + ("?" if certainty == "possible" else "")
