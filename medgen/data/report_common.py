"""Pieces shared by the English and Chinese report families: random choice and lesion measurements.

Every random draw goes through the ``numpy.random.Generator`` handed in, so a report is a pure function
of (findings, rng state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medgen.data.findings import Findings, Lesion
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
    """

    lesion: Lesion
    mm: int
    short_mm: int
    solid_mm: int

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


# Size styles. "A × B" styles fall back to one dimension when there is no second axis.
def size_text(m: Measured, style: str) -> str:
    """Written size of a measured lesion.

    Styles: 'mm' (12 mm), 'mm-adj' (12-mm), 'cm' (1.2 cm), 'axb' (12 × 10 mm), 'axb-x' (12 x 10 mm),
    'axb-cm' (1.2 × 1.0 cm), 'mm-mm' (12 mm x 10 mm); Chinese: 'zh-mm' (12mm), 'zh-axb' (12×10mm),
    'zh-axb-cm' (1.2×1.0cm), 'zh-mm-mm' (12mm×10mm), 'zh-haomi' (12毫米), 'zh-cm' (1.2cm),
    'zh-limi' (1.2厘米).
    """
    a, b = m.mm, m.short_mm
    two = b > 0
    if style in ("axb", "axb-x", "axb-cm", "mm-mm", "zh-axb", "zh-axb-cm", "zh-mm-mm") and not two:
        style = "zh-mm" if style.startswith("zh") else "mm"
    table = {
        "mm": lambda: f"{a} mm",
        "mm-adj": lambda: f"{a}-mm",
        "cm": lambda: f"{_cm(a)} cm",
        "axb": lambda: f"{a} × {b} mm",
        "axb-x": lambda: f"{a} x {b} mm",
        "axb-cm": lambda: f"{_cm(a)} × {_cm(b)} cm",
        "mm-mm": lambda: f"{a} mm x {b} mm",
        "zh-mm": lambda: f"{a}mm",
        "zh-axb": lambda: f"{a}×{b}mm",
        "zh-axb-cm": lambda: f"{_cm(a)}×{_cm(b)}cm",
        "zh-mm-mm": lambda: f"{a}mm×{b}mm",
        "zh-haomi": lambda: f"{a}毫米",
        "zh-cm": lambda: f"{_cm(a)}cm",
        "zh-limi": lambda: f"{_cm(a)}厘米",
    }
    if style not in table:
        raise ValueError(f"`style` must be one of {tuple(table)}, got {style!r}")
    return table[style]()


def article(following: str) -> str:
    """'a' or 'an' for the word that follows (spoken numbers: 8, 11, 18, 80-89 take 'an')."""
    word = following.lstrip()
    digits = ""
    for ch in word:
        if not ch.isdigit():
            break
        digits += ch
    if digits:
        return "an" if digits.startswith("8") or digits in ("11", "18") else "a"
    return "an" if word[:1].lower() in "aeio" else "a"


def capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:] if sentence else sentence
