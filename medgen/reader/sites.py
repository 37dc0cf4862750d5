"""Where in the lungs: lobe and segment phrases of English and Chinese reports, read into lobes.

A site phrase names a side and a zone ("right upper lobe", "upper lobe of the right lung", "the right lung lower
lobe", "RUL", "右肺上叶", "右上肺", "左下肺"), a lobe by itself ("middle lobe" / "中叶": the right; "lingula" /
"舌段": the left upper lobe), or a bronchopulmonary segment. A segment names its lobe's zone (apical, posterior,
anterior: upper; lateral, medial: the right middle lobe; superior and the basal segments: lower; apicoposterior and
the lingular segments: the left upper lobe) and, written next to a lobe phrase ("posterobasal segment of the right
lower lobe", "右肺下叶背段"), is one site with it. A site with a zone but no side takes the side of the nearest
site before it in its sentence (`resolve_sides`), else its section heading's (done at assembly), else the right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

ZONES = ("upper", "middle", "lower")
_SIDE_EN = r"(?P<side>right|left|rt|lt)\.?"
_ZONE_EN = r"(?P<zone>upper|middle|mid|lower)"
_B = r"(?<![A-Za-z0-9])"
_E = r"(?![A-Za-z])"
# English segment names -> (zone, side or None); longest first when compiled
_SEGMENTS_EN = {
    "apicoposterior": ("upper", "left"), "apico-posterior": ("upper", "left"), "apical posterior": ("upper", "left"),
    "superior lingular": ("upper", "left"), "inferior lingular": ("upper", "left"), "lingular": ("upper", "left"),
    "anterior basal": ("lower", None), "anterobasal": ("lower", None), "anteromedial basal": ("lower", None),
    "anteromedial": ("lower", None), "lateral basal": ("lower", None), "laterobasal": ("lower", None),
    "posterior basal": ("lower", None), "posterobasal": ("lower", None), "medial basal": ("lower", None),
    "mediobasal": ("lower", None), "basal": ("lower", None), "superior": ("lower", None),
    "apical": ("upper", None), "posterior": ("upper", None), "anterior": ("upper", None),
    "lateral": ("middle", "right"), "medial": ("middle", "right"),
}
_SEGMENTS_ZH = {
    "尖后段": ("upper", "left"), "上舌段": ("upper", "left"), "下舌段": ("upper", "left"), "舌段": ("upper", "left"),
    "舌叶": ("upper", "left"), "内前基底段": ("lower", None), "前内基底段": ("lower", None),
    "前基底段": ("lower", None), "外基底段": ("lower", None), "后基底段": ("lower", None), "内基底段": ("lower", None),
    "基底段": ("lower", None), "背段": ("lower", None), "尖段": ("upper", None), "后段": ("upper", None),
    "前段": ("upper", None), "外侧段": ("middle", "right"), "内侧段": ("middle", "right"),
}
_SEG_EN = "|".join(re.escape(s).replace(r"\ ", r"[\s-]+") for s in sorted(_SEGMENTS_EN, key=len, reverse=True))
_SEG_ZH = "|".join(sorted(_SEGMENTS_ZH, key=len, reverse=True))
_ZH_SIDE = {"左": "left", "右": "right"}
_ZH_ZONE = {"上": "upper", "中": "middle", "下": "lower"}

_EN_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    _B + _SIDE_EN + r"[\s-]+(?:lung[\s,]+)?" + _ZONE_EN + r"[\s-]+lobes?" + _E,
    _B + _ZONE_EN + r"[\s-]+lobe\s+of\s+(?:the\s+)?" + _SIDE_EN + r"\s+lung" + _E,
    _B + r"(?P<abbr>rul|rml|rll|lul|lll)s?" + _E,
    _B + r"(?P<seg>" + _SEG_EN + r")[\s-]+(?:basal[\s-]+)?(?:sub)?segments?" + _E,
    _B + r"(?P<ling>lingula|lingular[\s-]+lobe)" + _E,
    _B + r"(?:(?:the\s+)?" + _SIDE_EN + r"[\s-]+(?:lung[\s-]+)?)(?P<end>apex|apices|apical\s+region|base|basal\s+region|"
                                         r"lung\s+base|basilar\s+region)" + _E,
    _B + r"(?:the\s+)?(?P<mid>middle[\s-]+lobe|mid[\s-]+lobe)" + _E,
    _B + _SIDE_EN + r"\s+" + r"(?P<uzone>upper|lower)[\s-]+zones?" + _E,
    _B + _ZONE_EN + r"[\s-]+lobes?" + _E,
    _B + _SIDE_EN + r"[\s-]+(?:lung|hemithorax)" + _E,
)]
_ZH_PATTERNS = [re.compile(p, re.IGNORECASE) for p in (
    r"(?P<side>[左右])肺?(?P<zone>[上中下])叶",
    r"(?P<side>[左右])(?P<zone>[上中下])肺(?:野)?",
    r"(?P<side>[左右])肺(?P<zone>[上中下])野",
    r"(?P<seg>" + _SEG_ZH + r")",
    r"(?P<mid>中叶)",
    r"(?P<zone>[上下])叶",
    r"(?P<side>[左右])肺(?![上中下门])",
)]
# what may stand between a lobe phrase and its segment ("superior segment of the right lower lobe")
_JOIN = re.compile(r"^[\s,，、]*(?:(?:of|in|within|at)\s+)?(?:the\s+)?$|^[\s,，、]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Site:
    start: int
    end: int
    side: str | None
    zone: str | None
    text: str
    segment: bool = False  # named by a segment only (its side may be inferred)

    @property
    def lobe(self) -> str | None:
        if self.zone is None or self.side is None:
            return None
        if self.side == "left" and self.zone == "middle":
            return "left_upper"  # the lingula is the left lung's middle-lobe homologue
        return f"{self.side}_{self.zone}"


def _en_site(m: re.Match) -> Site:
    g = {k: (v.lower() if v else v) for k, v in m.groupdict().items()}
    side = {"rt": "right", "lt": "left"}.get(g.get("side"), g.get("side"))
    zone = {"mid": "middle"}.get(g.get("zone"), g.get("zone"))
    if g.get("abbr"):
        side, zone = {"r": "right", "l": "left"}[g["abbr"][0]], {"u": "upper", "m": "middle", "l": "lower"}[g["abbr"][1]]
    elif g.get("seg"):
        zone, implied = _SEGMENTS_EN[re.sub(r"[\s-]+", " ", g["seg"]).replace("apico posterior", "apico-posterior")]
        return Site(m.start(), m.end(), implied, zone, m.group(0), segment=True)
    elif g.get("ling"):
        side, zone = "left", "upper"
    elif g.get("end"):
        zone = "upper" if g["end"].startswith("ap") else "lower"
    elif g.get("mid"):
        side, zone = "right", "middle"
    elif g.get("uzone"):
        zone = g["uzone"]
    return Site(m.start(), m.end(), side, zone, m.group(0))


def _zh_site(m: re.Match) -> Site:
    g = m.groupdict()
    if g.get("seg"):
        zone, implied = _SEGMENTS_ZH[g["seg"]]
        return Site(m.start(), m.end(), implied, zone, m.group(0), segment=True)
    if g.get("mid"):
        return Site(m.start(), m.end(), "right", "middle", m.group(0))
    return Site(m.start(), m.end(), _ZH_SIDE.get(g.get("side") or ""), _ZH_ZONE.get(g.get("zone") or ""), m.group(0))


def find_sites(text: str, language: str) -> list[Site]:
    """Site phrases, a lobe phrase and its segment joined into one site; overlapping matches keep the longest."""
    found = [_en_site(m) for p in _EN_PATTERNS for m in p.finditer(text)]  # code-mixed Chinese too ("RUL见")
    if language == "zh":
        found += [_zh_site(m) for p in _ZH_PATTERNS for m in p.finditer(text)]
    kept: list[Site] = []
    for s in sorted(found, key=lambda s: (-(s.end - s.start), s.start)):
        if all(s.end <= k.start or s.start >= k.end for k in kept):
            kept.append(s)
    kept.sort(key=lambda s: s.start)
    out: list[Site] = []
    for s in kept:
        if out and _JOIN.match(text[out[-1].end:s.start]) and _compatible(out[-1], s):
            out[-1] = _join(out[-1], s, text)
        else:
            out.append(s)
    return out


def _compatible(a: Site, b: Site) -> bool:
    """Two adjacent phrases that name one site: a lobe and its segment, or a side and a lobe."""
    if a.segment == b.segment and a.zone and b.zone:
        return False
    sides_ok = a.side is None or b.side is None or a.side == b.side
    zones_ok = a.zone is None or b.zone is None or a.zone == b.zone or (a.segment or b.segment)
    return sides_ok and zones_ok


def _join(a: Site, b: Site, text: str) -> Site:
    lobe_phrase, other = (b, a) if a.segment and not b.segment else (a, b)
    zone = lobe_phrase.zone or other.zone
    side = lobe_phrase.side or other.side
    return Site(a.start, b.end, side, zone, text[a.start:b.end], segment=lobe_phrase.segment and other.segment)


def resolve_sides(sites: list[Site], sentence_of) -> list[Site]:
    """Sites with a zone but no side take the side of the nearest sided site before them in their sentence."""
    out = []
    for i, s in enumerate(sites):
        if s.side is None and s.zone is not None:
            before = [p for p in sites[:i] if p.side and sentence_of(p.start) == sentence_of(s.start)]
            if before:
                s = replace(s, side=before[-1].side)
        out.append(s)
    return out
