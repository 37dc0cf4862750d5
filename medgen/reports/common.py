"""Pieces shared by the English and Chinese report families: random choice and lesion measurements.

Every random draw goes through the ``numpy.random.Generator`` handed in, so a report is a pure function
of (findings, rng state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medgen.findings import Findings, Lesion
from medgen.reports.spans import OPEN, SEP, mark, visible
from medgen.volume import density_class


def pick(rng: np.random.Generator, options):
    """One element of a non-empty sequence."""
    return options[int(rng.integers(len(options)))]


def chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def shuffled(rng: np.random.Generator, items: list) -> list:
    return [items[i] for i in rng.permutation(len(items))]


def numbered(items: list[str]) -> list[str]:
    """'1. …', '2. …' list items."""
    return [f"{i}. {item}" for i, item in enumerate(items, 1)]


def negations(findings: Findings, rng: np.random.Generator, lesion: tuple[str, ...], effusion: tuple[str, ...],
              emphysema: tuple[str, ...], p: float = 0.7) -> list[str]:
    """Negative statements for absent findings: lesion and effusion with probability p, emphysema p / 2."""
    out = []
    if not findings.lesions and chance(rng, p):
        out.append(pick(rng, lesion))
    if findings.effusion is None and chance(rng, p):
        out.append(pick(rng, effusion))
    if findings.emphysema is None and chance(rng, p / 2):
        out.append(pick(rng, emphysema))
    return out


def compose_negations(frames: tuple[str, ...], nouns: tuple[str, ...], tag: str,
                      held_out: tuple[str, ...]) -> tuple[str, ...]:
    """Every frame ('No {n}.', '{N} is not seen.') with every noun, the noun marked `tag` ('eff-'); sentences
    that read like a held-out one are left out, so held-out negations stay unseen while their parts (a cue, a
    noun) are learned separately: negation is a cue over a noun, not a list of fixed sentences."""
    unseen = {visible(h).lower() for h in held_out}
    out = []
    for frame in frames:
        for noun in nouns:
            sentence = frame.format(n=mark(noun, tag), N=mark(noun[0].upper() + noun[1:], tag))
            if visible(sentence).lower() not in unseen:
                out.append(sentence)
    return tuple(out)


def worded_kind(m: Measured, rng: np.random.Generator, vocab: str, p_other: float = 0.15) -> str:
    """The noun class a writer uses: the 30 mm rule (`Measured.kind`), but in training reports sometimes the other
    class, as radiologists write "a 35 mm nodule" too: the reader must take the size from the number, not from
    the noun (reader v8, trained with the rule only, read no lesion at all in "A 35 mm nodule in the right lower
    lobe."). Held-out reports keep the rule (and their random draws)."""
    if vocab != "train" or rng.random() >= p_other:
        return m.kind
    return "nodule" if m.kind == "mass" else "mass"


def some_of(rng: np.random.Generator, options: tuple[str, ...], k_max: int) -> list[str]:
    """0..k_max distinct options in random order (incidental sentences)."""
    return shuffled(rng, list(options))[: int(rng.integers(k_max + 1))]


def _round_half_up(x: float) -> int:
    return int(np.floor(float(x) + 0.5))


@dataclass(frozen=True)
class Measured:
    """A lesion as the report states it: integer millimetres, consistent second axis and solid part.

    Args:
        lesion: the ground-truth lesion.
        mm: written long-axis diameter (the lesion's diameter rounded to 1 mm).
        short_mm: written short axis, strictly smaller than `mm` (0 when `mm` is 1).
        solid_mm: size of the solid component (used for part-solid lesions only), < `mm`.
        third_mm: a third (cranio-caudal) diameter for 'A × B × C' styles, <= `short_mm`.
    """

    lesion: Lesion
    mm: int
    short_mm: int
    solid_mm: int

    @property
    def third_mm(self) -> int:
        return max(1, _round_half_up(self.short_mm * 0.9)) if self.short_mm > 1 else 0

    @property
    def lobe(self) -> str:
        return self.lesion.lobe

    @property
    def margin(self) -> str:
        return self.lesion.margin

    @property
    def density(self) -> str:
        """'ground-glass', 'part-solid' or 'solid' (`medgen.volume.density_class`)."""
        return density_class(self.lesion.density)

    @property
    def kind(self) -> str:
        """'mass' from 30 mm as written, else 'nodule'."""
        return "mass" if self.mm >= 30 else "nodule"


def measure(lesion: Lesion, rng: np.random.Generator) -> Measured:
    mm = max(1, _round_half_up(lesion.diameter_mm))
    short = min(mm - 1, _round_half_up(mm * rng.uniform(0.7, 0.95)))
    solid = min(mm - 1, max(1, _round_half_up(mm * rng.uniform(0.2, 0.6))))
    return Measured(lesion, mm, max(short, 0), max(solid, 0))


def measure_all(findings: Findings, rng: np.random.Generator) -> list[Measured]:
    return [measure(lesion, rng) for lesion in findings.lesions]


def _cm(mm: int) -> str:
    return f"{mm / 10:.1f}"


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}
_ZH_DIGITS = "零一二三四五六七八九"


def number_words(n: int) -> str:
    """0-99 in English words: 12 -> 'twelve', 45 -> 'forty-five'."""
    if not 0 <= n < 100:
        raise ValueError(f"`n` must be in [0, 100), got {n}")
    if n < 20:
        return _ONES[n]
    return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])


def zh_number(n: int) -> str:
    """0-99 in Chinese numerals: 12 -> '十二', 35 -> '三十五', 20 -> '二十'."""
    if not 0 <= n < 100:
        raise ValueError(f"`n` must be in [0, 100), got {n}")
    if n < 10:
        return _ZH_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else _ZH_DIGITS[tens]) + "十" + ("" if ones == 0 else _ZH_DIGITS[ones])


def _cm_words(mm: int, zh: bool = False) -> str:
    whole, tenth = divmod(mm, 10)
    if zh:
        return (zh_number(whole) if whole != 2 else "两") + ("" if tenth == 0 else "点" + _ZH_DIGITS[tenth])
    return number_words(whole) + ("" if tenth == 0 else " point " + _ONES[tenth])


# Size styles. "A × B" styles fall back to one dimension when there is no second axis.
def size_text(m: Measured, style: str) -> str:
    """Written size of a measured lesion.

    Styles: 'mm' (12 mm), 'mm-adj' (12-mm), 'cm' (1.2 cm), 'axb' (12 × 10 mm), 'axb-x' (12 x 10 mm),
    'axb-cm' (1.2 × 1.0 cm), 'mm-mm' (12 mm x 10 mm), 'axbxc-cm' (3.5 × 2.8 × 2.6 cm), 'by-cm' (1.2 by 1.0 cm),
    'words-mm' (twelve millimeters), 'words-cm' (one point two centimeters), 'mm-long' (12 millimetres);
    Chinese: 'zh-mm' (12mm), 'zh-axb' (12×10mm), 'zh-axb-cm' (1.2×1.0cm), 'zh-mm-mm' (12mm×10mm),
    'zh-haomi' (12毫米), 'zh-cm' (1.2cm), 'zh-limi' (1.2厘米), 'zh-axbxc' (12×10×9mm), 'zh-words-mm' (十二毫米),
    'zh-words-cm' (一点二厘米), 'zh-gongfen' (1.2公分), 'zh-axb-star' (12*10mm).
    The result is marked as a lesion size (`medgen.reports.spans`).
    """
    return mark(_size_words(m, style), "size")


def _size_words(m: Measured, style: str) -> str:
    a, b = m.mm, m.short_mm
    two = b > 0
    if style in ("axb", "axb-x", "axb-cm", "mm-mm", "axbxc-cm", "by-cm", "zh-axb", "zh-axb-cm", "zh-mm-mm",
                 "zh-axbxc", "zh-axb-star") and not two:
        style = "zh-mm" if style.startswith("zh") else "mm"
    if style in ("axbxc-cm", "zh-axbxc") and not m.third_mm:
        style = "zh-axb" if style.startswith("zh") else "axb-cm"
    table = {
        "mm": lambda: f"{a} mm",
        "mm-adj": lambda: f"{a}-mm",
        "cm": lambda: f"{_cm(a)} cm",
        "axb": lambda: f"{a} × {b} mm",
        "axb-x": lambda: f"{a} x {b} mm",
        "axb-cm": lambda: f"{_cm(a)} × {_cm(b)} cm",
        "mm-mm": lambda: f"{a} mm x {b} mm",
        "axbxc-cm": lambda: f"{_cm(a)} × {_cm(b)} × {_cm(m.third_mm)} cm",
        "by-cm": lambda: f"{_cm(a)} by {_cm(b)} cm",
        "words-mm": lambda: f"{number_words(a)} millimeters" if a < 100 else f"{a} mm",
        "words-cm": lambda: f"{_cm_words(a)} centimeters" if a < 100 else f"{_cm(a)} cm",
        "mm-long": lambda: f"{a} millimetres",
        "zh-mm": lambda: f"{a}mm",
        "zh-axb": lambda: f"{a}×{b}mm",
        "zh-axb-cm": lambda: f"{_cm(a)}×{_cm(b)}cm",
        "zh-mm-mm": lambda: f"{a}mm×{b}mm",
        "zh-haomi": lambda: f"{a}毫米",
        "zh-cm": lambda: f"{_cm(a)}cm",
        "zh-limi": lambda: f"{_cm(a)}厘米",
        "zh-axbxc": lambda: f"{a}×{b}×{m.third_mm}mm",
        "zh-words-mm": lambda: f"{zh_number(a)}毫米" if a < 100 else f"{a}毫米",
        "zh-words-cm": lambda: f"{_cm_words(a, zh=True)}厘米" if a < 100 else f"{_cm(a)}厘米",
        "zh-gongfen": lambda: f"{_cm(a)}公分",
        "zh-axb-star": lambda: f"{a}*{b}mm",
    }
    if style not in table:
        raise ValueError(f"`style` must be one of {tuple(table)}, got {style!r}")
    return table[style]()


def article(following: str) -> str:
    """'a' or 'an' for the word that follows (spoken numbers: 8, 11, 18, 80-89 take 'an')."""
    word = visible(following).lstrip()
    if word[:1].isalpha() and word.split()[0].split("-")[0].lower() in ("eight", "eighteen", "eleven", "eighty"):
        return "an"
    digits = ""
    for ch in word:
        if not ch.isdigit():
            break
        digits += ch
    if digits:
        return "an" if digits.startswith("8") or digits in ("11", "18") else "a"
    return "an" if word[:1].lower() in "aeio" else "a"


def capitalize(sentence: str) -> str:
    """Upper-case the first visible letter (a leading span mark is skipped)."""
    start = sentence.index(SEP) + 1 if sentence.startswith(OPEN) else 0
    return sentence[:start] + sentence[start:start + 1].upper() + sentence[start + 1:]


@dataclass(frozen=True)
class ClinicalVoice:
    """One language's pieces for the clinical-style families (`clinical_body`): sentence makers and the
    negation banks (each ``{"train": ..., "heldout": ...}``)."""

    lesion: object  # (Measured, rng, vocab) -> list[str]
    resolved: object  # (Findings, rng, vocab) -> list[str]
    effusion: object  # (Effusion, rng, vocab) -> list[str]
    emphysema: object  # (Findings, rng, vocab) -> list[str]
    neg_lesion: dict
    neg_effusion: dict
    neg_emphysema: dict


def clinical_body(f: Findings, rng: np.random.Generator, vocab: str, voice: ClinicalVoice) -> list[str]:
    """Sentences of a clinical-style report body: lesions, a resolved prior lesion now and then, effusion and
    emphysema (or their negations), a lesion negation for lesion-free studies."""
    out = []
    for m in measure_all(f, rng):
        out += voice.lesion(m, rng, vocab)
    out += voice.resolved(f, rng, vocab)
    if f.effusion:
        out += voice.effusion(f.effusion, rng, vocab)
    elif chance(rng, 0.6):
        out.append(pick(rng, voice.neg_effusion[vocab]))
    if f.emphysema:
        out += voice.emphysema(f, rng, vocab)
    elif chance(rng, 0.3):
        out.append(pick(rng, voice.neg_emphysema[vocab]))
    if not f.lesions and chance(rng, 0.6):
        out.append(pick(rng, voice.neg_lesion[vocab]))
    return out
