"""Read a size span the tagger found ("3.5 × 2.8 cm", "twelve millimeters", "1.2by1.0cm", "十二毫米",
"一点五厘米", "2.4公分") into diameters in millimetres, largest first.

This is normalisation of a span the learned tagger has already picked out, not report parsing: it never
decides *whether* words are a lesion size, only what number they spell.
"""

from __future__ import annotations

import re
import unicodedata

_EN_UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
             "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
             "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "a": 1, "an": 1}
_EN_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
            "ninety": 90}
# English words that spell numbers ("a" / "an" only count as one inside a size, not before it)
NUMBER_WORDS = tuple(w for w in (*_EN_UNITS, *_EN_TENS, "point") if w not in ("a", "an"))
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_NUM_WORD = r"(?:" + "|".join(sorted((*_EN_UNITS, *_EN_TENS), key=len, reverse=True)) + r")"
_SIZE_NUMBER = (r"(?:\d+(?:[.,]\d+)?|\.\d+|[零〇一二两三四五六七八九十]+(?:点[零〇一二两三四五六七八九]+)?"
                r"|\b" + _NUM_WORD + r"(?:(?:\s+|-)(?:point|" + _NUM_WORD + r"))*\b)")
_FIRST = r"(?<![\d.,A-Za-z])"  # a size starts a token ("A1" or "3.5" halves are not sizes)
_SIZE_UNIT = r"(?:mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?|毫米|厘米|公分)(?![A-Za-z])"
# "18 mm", "8-mm", "2.7 x 2.1 cm", "3.5 cm × 2.8 cm", "48x41 mm", "12-15 mm", "大小约2.3cm×1.8cm", "十二毫米"
SIZE_PATTERN = re.compile(
    rf"{_FIRST}{_SIZE_NUMBER}(?:\s*(?:-\s*)?(?:{_SIZE_UNIT})?\s*(?:[x×*✕]|by|乘)\s*{_SIZE_NUMBER}){{0,2}}\s*-?\s*{_SIZE_UNIT}"
    rf"|{_FIRST}{_SIZE_NUMBER}\s*[-–~～]\s*{_SIZE_NUMBER}\s*{_SIZE_UNIT}", re.IGNORECASE)
_CM = re.compile(r"cm|centimet(?:er|re)s?|厘米|公分")
_MM = re.compile(r"mm|millimet(?:er|re)s?|毫米")
_NUMBER = re.compile(r"\d*\.?\d+")
_SEPARATOR = re.compile(r"\s*(?:×|\*|x|by|乘)\s*", re.IGNORECASE)


def _en_words_to_digits(text: str) -> str:
    """'one point five' -> '1.5', 'twenty-four' -> '24' inside a longer string."""
    words = re.split(r"(\s+|-)", text)
    out, number, decimal, pending = [], None, None, []

    def flush():
        nonlocal number, decimal
        if number is not None:
            out.append(str(number) + ("" if decimal is None else "." + decimal))
        number, decimal = None, None

    for token in words:
        low = token.lower()
        if low in _EN_TENS or (low in _EN_UNITS and low not in ("a", "an")):
            value = _EN_TENS.get(low, _EN_UNITS.get(low))
            if decimal is not None:
                decimal += str(value)
            elif number is not None and number % 10 == 0 and number >= 20 and value < 10:
                number += value
            elif number is None:
                number = value
            else:
                flush()
                number = value
            pending = []
            continue
        if low == "point" and number is not None and decimal is None:
            decimal = ""
            continue
        if low in ("-", "") or low.isspace():
            pending.append(token)
            continue
        flush()
        out.extend(pending)
        pending = []
        out.append(token)
    flush()
    out.extend(pending)
    return " ".join(part for part in (p.strip() for p in out) if part)


def _zh_numerals_to_digits(text: str) -> str:
    """'十二' -> '12', '一点五' -> '1.5', '三十五' -> '35' inside a longer string."""
    def convert(match: re.Match) -> str:
        whole, _, frac = match.group(0).partition("点")
        if "十" in whole:
            tens, _, ones = whole.partition("十")
            value = (_ZH_DIGITS[tens] if tens else 1) * 10 + (_ZH_DIGITS[ones] if ones else 0)
        else:
            value = int("".join(str(_ZH_DIGITS[c]) for c in whole)) if whole else 0
        return str(value) + ("." + "".join(str(_ZH_DIGITS[c]) for c in frac) if frac else "")
    return re.sub(r"[零〇一二两三四五六七八九十]+(?:点[零〇一二两三四五六七八九]+)?", convert, text)


def find_sizes(text: str) -> list[tuple[int, int, tuple[float, ...]]]:
    """Every size written with a unit in `text`: (start, end, diameters in mm, largest first)."""
    out = []
    for match in SIZE_PATTERN.finditer(text):
        sizes = parse_size_mm(match.group(0))
        if sizes:
            out.append((match.start(), match.end(), sizes))
    return out


def parse_size_mm(span: str) -> tuple[float, ...] | None:
    """Diameters (mm, largest first, at most three) spelt by a size span; None when it holds no number.

    A unit applies to the numbers before it that have none ("3.5 × 2.8 cm"); a span without any unit is read
    as millimetres when its largest number is at least 3 and as centimetres below that ("1.2 × 0.9").
    Zero sizes are dropped; a range ("12-15 mm") reads as two diameters, the larger first.
    """
    text = _zh_numerals_to_digits(_en_words_to_digits(unicodedata.normalize("NFKC", span)))
    parts, unassigned = [], []
    pos = 0
    for match in _NUMBER.finditer(text):
        between = text[pos:match.start()]
        _assign(between, unassigned, parts)
        unassigned.append(float(match.group(0)))
        pos = match.end()
    _assign(text[pos:], unassigned, parts, final=True)
    parts = [p for p in parts if p > 0]
    if not parts:
        return None
    return tuple(sorted((round(p, 2) for p in parts), reverse=True))[:3]


def _assign(between: str, unassigned: list[float], parts: list[float], final: bool = False) -> None:
    """Give the numbers waiting for a unit the unit found in `between` (or a default at the end)."""
    if not unassigned:
        return
    if _CM.search(between):
        parts += [v * 10 for v in unassigned]
        unassigned.clear()
    elif _MM.search(between):
        parts += unassigned
        unassigned.clear()
    elif final:
        scale = 1.0 if max(unassigned) >= 3 else 10.0
        parts += [v * scale for v in unassigned]
        unassigned.clear()
