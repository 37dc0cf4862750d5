"""Turn tagged spans (`medgen.reader.decode`) into `Findings`.

1. Spans: `medgen.reader.decode.decode_spans`.
2. Attachment: every attribute span (size, loc, type, margin / eside, egrade / xgrade, xdist) goes to the
   nearest anchor of its finding kind in the same clause (clauses end at ',', ';' and their full-width
   forms), so "左侧少量积液，右侧未见积液" gives each side to its own mention; else to the nearest anchor of
   the sentence, preferring one whose clause did not state that attribute ("双侧胸腔积液，右侧大量，左侧少量"
   pools both sides); in a sentence without an anchor, to the last anchor before it in its section ("It
   measures 12 mm."; sections open at a heading such as "IMPRESSION:").
   A sentence ends at '.', '。' or a line end. A sentence
   with a lobe and a size but no lesion word gets an implicit (restated) lesion anchor (`_implicit_lesions`).
3. Findings: negated anchors ('les-', 'eff-', 'emph-') are dropped with everything attached to them; hedged
   ones ('?') become `certainty="possible"`. A sized mention with the lobe and long axis (±0.5 mm) of a lesion
   in an earlier section ("FINDINGS:" ... "IMPRESSION:") is that lesion said again. A lobe named without a side
   ("The lower lobe contains ...") takes the side of its section's heading ("LEFT LUNG:", "左肺："). A restated
   lesion ('les^', e.g. an IMPRESSION line) merges into the earlier lesion of its lobe with the closest size
   (and type, when both are stated); so does a mention with no size of its own, and a sized mention fills an
   earlier unsized one of its lobe. A mention with no lobe ("The nodule measures 12 mm.") adds what it says to
   the lesion before it. Effusion sides are pooled (left + right = bilateral).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from medgen.findings import EFFUSION_GRADES, EMPHYSEMA_GRADES, Effusion, Emphysema, Findings, Lesion
from medgen.reader.decode import TaggedSpan
from medgen.reader.sizes import parse_size_mm
from medgen.volume import DENSITY_WORD_DEFAULTS

DEFAULT_SIZE_MM = 10.0
MAX_SIZE_MM = 300.0  # no lung lesion is larger; a bigger "size" is a misread number
ATTRIBUTES = {"les": ("size", "loc", "type", "margin"), "eff": ("eside", "egrade"), "emph": ("xgrade", "xdist")}
_SENTENCE_END = re.compile(r"\.(?!\d)|。|\n")  # not a decimal point (3.5, .8)
# a heading that opens a section: "IMPRESSION:", "Lungs and airways:", "印象：" at a line start (not a lobe
# label: "RLL: 7 mm focus." lines list lesions of one section)
_SECTION_START = re.compile(r"(?:^|\n)[ \t]*(?:[A-Za-z][A-Za-z /&-]{3,40}|[\u4e00-\u9fff]{2,8})[ \t]*[:：]")
# a side named by a location or a heading ("left lower lobe", "RLL", "lingula", "右肺", "RIGHT LUNG:")
_SIDE_CUE = re.compile(r"\b(?:right|left|[RL](?:UL|ML|LL)?)\b|lingul|[左右舌]", re.IGNORECASE)
_SIDE_OF = {"right": "right", "左": "left", "右": "right", "left": "left", "r": "right", "l": "left"}
# a lobe read without a side, moved to the side its section heading names ("LEFT LUNG: The lower lobe ...")
_ON_SIDE = {("right_upper", "left"): "left_upper", ("right_middle", "left"): "left_upper",
            ("right_lower", "left"): "left_lower", ("left_upper", "right"): "right_upper",
            ("left_lower", "right"): "right_lower"}
_CLAUSE_END = re.compile(r",(?!\d)|，|;|；")  # not a decimal comma (2,5 cm)
_SIDE_WORDS = re.compile(r"\b(?:the|left|right)(?:[- ]sided)?\b|[左右]侧?", re.IGNORECASE)


@dataclass
class _Candidate:
    """A lesion being assembled, with what its report actually stated (defaults fill the rest)."""

    lesion: Lesion
    sized: bool
    typed: bool
    repeat: bool = False
    section: int = 0
    sources: list = field(default_factory=list)  # the anchors (with their attribute spans) it was read from


@dataclass
class _Anchor:
    span: TaggedSpan
    sentence: int
    section: int
    attributes: dict[str, list[TaggedSpan]] = field(default_factory=dict)


def _sentence_ids(text: str) -> np.ndarray:
    return _segment_ids(text, _SENTENCE_END)


def _implicit_lesions(spans: list[TaggedSpan], sentence: np.ndarray, section: np.ndarray) -> list[TaggedSpan]:
    """Lesion anchors for sentences that name a lobe and a size but no lesion word ("LLL: 9 mm, ground-glass.",
    a missed noun): such a sentence describes a lesion, unless it goes on about a lesion named earlier in its
    section without a lobe ("A nodule is seen. It lies in the RUL and measures 9 mm."). Marked restated ('^'),
    so one that repeats an earlier lesion of its lobe and size merges into it."""
    out = []
    for where in sorted({int(sentence[s.start]) for s in spans}):
        here = [s for s in spans if int(sentence[s.start]) == where]
        locs, sizes = [s for s in here if s.group == "loc"], [s for s in here if s.group == "size"]
        if not locs or not sizes or any(s.group == "les" for s in here):
            continue
        before = [s for s in spans if s.group == "les" and int(sentence[s.start]) < where
                  and section[s.start] == section[locs[0].start]]
        if before and not any(s.group == "loc" and sentence[s.start] == sentence[before[-1].start] for s in spans):
            continue
        loc = locs[0]
        out.append(TaggedSpan("les", "^", loc.start, loc.end, loc.text, 0.0, loc.source))
    return out


def _side_only_locations(spans: list[TaggedSpan], clause: np.ndarray) -> list[TaggedSpan]:
    """A 'location' that is only a side word ("Small [left] pleural effusion.") in a clause about an effusion
    and no lesion is the effusion's side: a lobe needs more than a side."""
    kinds = {(int(clause[s.start]), s.group) for s in spans if s.group in ("les", "eff")}
    out = []
    for s in spans:
        where = int(clause[s.start])
        if (s.group == "loc" and not _SIDE_WORDS.sub("", s.text).strip(" -,") and (where, "eff") in kinds
                and (where, "les") not in kinds):
            s = TaggedSpan("eside", s.value.split("_")[0], s.start, s.end, s.text, s.score, s.source)
        out.append(s)
    return out


def _attach(text: str, spans: list[TaggedSpan], section: np.ndarray) -> dict[str, list[_Anchor]]:
    sentence, clause = _sentence_ids(text), _clause_ids(text)
    spans = _side_only_locations(spans, clause)
    spans = sorted([*spans, *_implicit_lesions(spans, sentence, section)], key=lambda s: s.start)
    anchors = {kind: [_Anchor(s, int(sentence[s.start]), int(section[s.start])) for s in spans if s.group == kind]
               for kind in ATTRIBUTES}
    for kind, groups in ATTRIBUTES.items():
        later = []  # attributes outside their anchor's clause: attached once every clause has its own
        for span in (s for s in spans if s.group in groups):
            here = [a for a in anchors[kind] if clause[a.span.start] == clause[span.start]]
            if here:
                min(here, key=lambda a: _gap(a.span, span)).attributes.setdefault(span.group, []).append(span)
            else:
                later.append(span)
        for span in later:
            where = int(sentence[span.start])
            same = [a for a in anchors[kind] if a.sentence == where]
            if same:  # an anchor whose clause does not state this attribute yet, else the nearest one
                free = [a for a in same if span.group not in a.attributes] or same
                anchor = min(free, key=lambda a: _gap(a.span, span))
            else:  # "It measures 12 mm." goes with the mention before it, never one of an earlier section
                before = [a for a in anchors[kind] if a.span.start < span.start and a.section == section[span.start]]
                if not before:
                    continue
                anchor = before[-1]
            anchor.attributes.setdefault(span.group, []).append(span)
    return anchors


def _clause_ids(text: str) -> np.ndarray:
    return _segment_ids(text, _SENTENCE_END, _CLAUSE_END)


def _segment_ids(text: str, *ends: re.Pattern) -> np.ndarray:
    """Per character (and one past the end): how many segment ends (`ends` matches) come before it."""
    ids = np.zeros(len(text) + 1, dtype=np.int64)
    for pattern in ends:
        for match in pattern.finditer(text):
            ids[match.end():] += 1
    return ids


def _gap(a: TaggedSpan, b: TaggedSpan) -> int:
    return max(b.start - a.end, a.start - b.end, 0)


def _first(anchor: _Anchor, group: str) -> str | None:
    spans = anchor.attributes.get(group)
    return spans[0].value if spans else None


def assemble(text: str, spans: list[TaggedSpan], trace: dict | None = None) -> tuple[Findings, list[str]]:
    """Findings from tagged spans, and warnings about what could not be used.

    Args:
        trace: a dict to fill with where each finding was read: "lesions" (one list of anchors per lesion, in
            order), "effusion" and "emphysema" (their anchors); an anchor has `.span` and `.attributes`.
    """
    section, heading_sides = _sections(text)
    anchors, warnings = _attach(text, spans, section), []
    candidates: list[_Candidate] = []
    for anchor in anchors["les"]:
        if anchor.span.value == "-":
            continue
        if _first(anchor, "loc") is None and candidates:
            _fill(candidates[-1], anchor, warnings)
            candidates[-1].sources.append(anchor)
            continue
        candidate = _lesion(anchor, warnings, heading_sides.get(anchor.section))
        if candidate is not None:
            candidate.sources.append(anchor)
            into = _merge(candidates, candidate)
            if into is not None:
                into.sources.append(anchor)
    for c in candidates:
        if not c.sized:
            warnings.append(f"no size given for the {c.lesion.lobe.replace('_', ' ')} lesion: "
                            f"{DEFAULT_SIZE_MM:g} mm assumed")
    findings = Findings(lesions=[c.lesion for c in candidates], effusion=_effusion(anchors["eff"]),
                        emphysema=_emphysema(anchors["emph"]))
    if trace is not None:
        trace.update(lesions=[c.sources for c in candidates],
                     effusion=[a for a in anchors["eff"] if a.span.value != "-"] if findings.effusion else [],
                     emphysema=[a for a in anchors["emph"] if a.span.value != "-"] if findings.emphysema else [])
    return findings, warnings


def _sections(text: str) -> tuple[np.ndarray, dict[int, str]]:
    """Per character (and one past the end): the section id (how many headings come before it); and section id ->
    the one side its heading names ("RIGHT LUNG:", "左肺："; headings naming none or both are left out)."""
    ids, sides = np.zeros(len(text) + 1, dtype=np.int64), {}
    for k, match in enumerate(_SECTION_START.finditer(text), 1):
        ids[match.end():] += 1
        named = {_SIDE_OF.get(cue.lower()) for cue in _SIDE_CUE.findall(match.group(0))} - {None}
        if len(named) == 1:
            sides[k] = named.pop()
    return ids, sides


def _lesion(anchor: _Anchor, warnings: list[str], heading_side: str | None = None) -> _Candidate | None:
    lobe = _first(anchor, "loc")
    if lobe is None:
        warnings.append(f"lesion mention {anchor.span.text!r} at character {anchor.span.start} has no lobe; "
                        "it was left out")
        return None
    if heading_side and not any(_SIDE_CUE.search(s.text) for s in anchor.attributes["loc"]):
        lobe = _ON_SIDE.get((lobe, heading_side), lobe)  # "the lower lobe" under "LEFT LUNG:"
    sizes = _sizes(anchor, warnings)
    kind = _first(anchor, "type") or "solid"
    lesion = Lesion(lobe=lobe, diameter_mm=sizes[0] if sizes else DEFAULT_SIZE_MM,
                    density=DENSITY_WORD_DEFAULTS[kind], margin=_first(anchor, "margin") or "smooth",
                    diameters_mm=sizes if sizes and len(sizes) > 1 else None,
                    certainty="possible" if anchor.span.value == "?" else "definite")
    return _Candidate(lesion, sized=bool(sizes), typed=_first(anchor, "type") is not None,
                      repeat=anchor.span.value == "^", section=anchor.section)


def _sizes(anchor: _Anchor, warnings: list[str]) -> tuple[float, ...] | None:
    for span in anchor.attributes.get("size", []):
        sizes = parse_size_mm(span.text)
        if sizes and sizes[0] > MAX_SIZE_MM:  # a date or an accession number tagged as a size ("2025")
            warnings.append(f"size {span.text!r} at character {span.start} reads {sizes[0]:g} mm, more than a "
                            f"lung can hold ({MAX_SIZE_MM:g} mm): ignored")
            continue
        if sizes:
            return sizes
    return None


def _fill(candidate: _Candidate, anchor: _Anchor, warnings: list[str]) -> None:
    """A lobe-less mention of the lesion before it: its size and type fill what that lesion lacks."""
    sizes, kind = _sizes(anchor, warnings), _first(anchor, "type")
    if sizes and not candidate.sized:
        candidate.lesion.diameter_mm, candidate.sized = sizes[0], True
        candidate.lesion.diameters_mm = sizes if len(sizes) > 1 else None
    if kind and not candidate.typed:
        candidate.lesion.density, candidate.typed = DENSITY_WORD_DEFAULTS[kind], True
    margin = _first(anchor, "margin")
    if margin and candidate.lesion.margin == "smooth":
        candidate.lesion.margin = margin


def _merge(candidates: list[_Candidate], new: _Candidate) -> _Candidate | None:
    """Fold a restated or unsized mention into the earlier lesion it repeats (returned); otherwise it is a new
    lesion (None)."""
    b = new.lesion
    twins = [old for old in candidates if old.sized and new.sized and old.lesion.lobe == b.lobe
             and abs(old.lesion.diameter_mm - b.diameter_mm) < 0.5 and old.section != new.section]
    if twins:  # the lobe and long axis of a lesion in an earlier section: "FINDINGS: ...", then "IMPRESSION: ..."
        old = twins[-1]
        if new.typed and not old.typed:
            old.lesion.density, old.typed = b.density, True
        return old
    if not (new.repeat or not new.sized):
        unsized = [old for old in candidates if old.lesion.lobe == new.lesion.lobe and not old.sized
                   and (not (old.typed and new.typed) or old.lesion.type == new.lesion.type)]
        if not unsized:
            candidates.append(new)
            return None
        old = unsized[-1]  # an earlier mention without a size: this one measures it
        old.lesion.diameter_mm, old.lesion.diameters_mm, old.sized = (new.lesion.diameter_mm,
                                                                      new.lesion.diameters_mm, True)
        if new.typed and not old.typed:
            old.lesion.density, old.typed = new.lesion.density, True
        return old
    same = [old for old in candidates if old.lesion.lobe == b.lobe
            and (not (old.typed and new.typed) or old.lesion.type == b.type)]
    if new.sized:
        same = [old for old in same if not old.sized or abs(old.lesion.diameter_mm - b.diameter_mm) <= 2.0]
    if not same:
        new.repeat = False
        candidates.append(new)
        return None
    old = min(same, key=lambda c: abs(c.lesion.diameter_mm - b.diameter_mm) if new.sized and c.sized else 0.0)
    a = old.lesion
    if new.sized and not old.sized:
        a.diameter_mm, a.diameters_mm, old.sized = b.diameter_mm, b.diameters_mm, True
    if new.typed and not old.typed:
        a.density, old.typed = b.density, True
    if b.certainty == "definite" and not new.repeat:
        a.certainty = "definite"
    return old


def _effusion(anchors: list[_Anchor]) -> Effusion | None:
    present = [a for a in anchors if a.span.value != "-"]
    if not present:
        return None
    sides = {s.value for a in present for s in a.attributes.get("eside", [])}
    side = "bilateral" if "bilateral" in sides or {"left", "right"} <= sides or not sides else sides.pop()
    grades = [s.value for a in present for s in a.attributes.get("egrade", [])]
    grade = max(grades, key=EFFUSION_GRADES.index) if grades else "small"
    certainty = "definite" if any(a.span.value == "+" for a in present) else "possible"
    return Effusion(side, grade, certainty)


def _emphysema(anchors: list[_Anchor]) -> Emphysema | None:
    present = [a for a in anchors if a.span.value != "-"]
    if not present:
        return None
    grades = [s.value for a in present for s in a.attributes.get("xgrade", [])]
    grade = max(grades, key=EMPHYSEMA_GRADES.index) if grades else "mild"
    upper = any(s.value == "upper" for a in present for s in a.attributes.get("xdist", []))
    certainty = "definite" if any(a.span.value == "+" for a in present) else "possible"
    return Emphysema(grade, upper, certainty)
