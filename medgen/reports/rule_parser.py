"""Best-effort parser from radiology report text (English or Chinese) back to `Findings`, for evaluation.

How it reads a report:
1. Sections: when a FINDINGS part holds any finding, the IMPRESSION / 诊断意见 part is ignored (it
   repeats the findings); a report with only a conclusion is read from the conclusion.
2. Sentences split on '.', ';', '。', '；' and line ends; clauses split on commas. A word is negated when
   a cue (no, without, 未见, 无, ...) precedes it in its clause, or the clause goes on 'is absent' /
   ': none' / '：无'.
3. A lesion is an affirmed nodule/mass word plus the follow-up sentences that describe it ('It
   measures ...', '该结节 ...', 'size: 12 mm'). It needs a lobe and a size; its diameter is the largest
   dimension given (cm converted to mm), its density the default of its words (`implied_density`), its
   margin 'smooth' unless lobulated or spiculated words are affirmed. Lobes named without a side
   ('the upper lobe') take the side of a 'RIGHT LUNG:' / '右肺：' heading.
4. Effusion side and grade, emphysema grade and upper-lobe predominance come from the sentence that
   mentions them; unstated values default to bilateral / small / mild.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medgen.findings import LOBES, Effusion, Emphysema, Findings, Lesion
from medgen.volume import DENSITY_WORD_DEFAULTS

__all__ = ["implied_density", "parse_report"]


def _en(words: str) -> str:
    """English alternatives as whole words (ASCII letters around them break the match, CJK do not)."""
    return rf"(?<![a-z])(?:{words})(?![a-z])"


def _rx(en: str, zh: str = "") -> re.Pattern:
    return re.compile(_en(en) + (f"|{zh}" if zh else ""))


# Text is lower-cased before matching.
LESION = _rx(r"nodules?|nodular|mass(?:es)?|opacit(?:y|ies)|lesions?|[pm]?ggns?|ggos?",
             "结节|肿块|团块|病灶|占位|磨玻璃影|毛玻璃影")
PART_SOLID = _rx(r"part[- ]?solid|partly[- ]solid|partially[- ]solid|semi[- ]?solid|sub[- ]?solid|mggn"
                 r"|mixed[- ](?:solid|ground[- ]glass|density|attenuation)|solid (?:component|portion|part)",
                 "部分实性|混杂磨玻璃|混合磨玻璃|混杂密度|混合密度|密度混杂|亚实性|半实性|实性成分|实性部分|mggn")
GROUND_GLASS = _rx(r"ground[- ]?glass|non-?solid|p?ggns?|ggos?|hazy", "磨玻璃|毛玻璃|非实性")
SOLID = _rx(r"solid|soft[- ]tissue(?: attenuation| density)?", "实性|实质性|软组织密度")
DENSITY_WORDS = (("part-solid", PART_SOLID), ("ground-glass", GROUND_GLASS), ("solid", SOLID))
MARGIN_WORDS = (("spiculated", _rx(r"spiculat(?:ed|ion|ions)|spicules?|stellate", "毛刺|棘状")),
                ("lobulated", _rx(r"(?:macro|micro)?lobulat(?:ed|ion|ions)|lobular", "分叶")))
SMOOTHISH = _rx(r"smooth|well[- ](?:circumscribed|defined|marginated)|sharply marginated|circumscribed",
                "光滑|清楚|清晰|规整|锐利")

EFFUSION = _rx(r"(?:pleural )?effusions?|pleural fluid|hydrothorax", "胸腔积液|胸膜腔积液|积液|胸水")
PERICARDIAL = _rx(r"pericardi(?:al|um)", "心包")
SIDES = (("bilateral", _rx(r"bilateral|bilaterally|both|bilat", "双侧|两侧|双")),
         ("left", _rx(r"left", "左")), ("right", _rx(r"right", "右")))
EFFUSION_GRADES = (("small", _rx(r"small|trace|minimal|tiny", "少量|微量|少许")),
                   ("moderate", _rx(r"moderate|medium", "中等量|中量|中等")),
                   ("large", _rx(r"large|massive|substantial|sizeable|sizable", "大量")))
EMPHYSEMA = _rx(r"emphysema|emphysematous", "肺气肿")
EMPHYSEMA_GRADES = (("mild", _rx(r"mild|minimal|slight|trace", "轻度|轻微")),
                    ("moderate", _rx(r"moderate", "中度")),
                    ("severe", _rx(r"severe|advanced|marked|extensive", "重度|严重|显著|明显")))
UPPER = _rx(r"upper|apical|apices|apex", "上叶|上肺|肺尖")

NEGATION = _rx(r"no|not|without|negative for|absence of|absent|free of|none", "未|无|没有|不伴")
POST_NEGATION = re.compile(r"^[^:：]{0,12}[:：]\s*(?:(?:none|absent|nil|no|negative)(?![a-z])|无|未见|阴性)"
                           r"|^\s*(?:is|are)\s+(?:not|absent)(?![a-z])")

_LOBE_OF = {tuple(lobe.split("_")): lobe for lobe in LOBES}  # ("right", "upper") -> "right_upper"
_ZH = {"右": "right", "左": "left", "上": "upper", "中": "middle", "下": "lower"}
_ABBR = {"rul": "right_upper", "rml": "right_middle", "rll": "right_lower", "lul": "left_upper",
         "lll": "left_lower"}
LOBE_PATTERNS = (  # (pattern, groups -> (side, zone)); the earliest match in a sentence wins
    (re.compile(_en(r"(right|left)[ -](upper|middle|lower)[ -]lobe")), lambda g: (g[0], g[1])),
    (re.compile(_en(r"(upper|middle|lower) lobe of the (right|left) lung")), lambda g: (g[1], g[0])),
    (re.compile(_en(r"(right|left) lung,? (upper|middle|lower) lobe")), lambda g: (g[0], g[1])),
    (re.compile(_en(r"(rul|rml|rll|lul|lll)")), lambda g: _ABBR[g[0]]),
    (re.compile(_en(r"lingula|lingular") + "|舌段|舌叶"), lambda g: ("left", "upper")),
    (re.compile(r"([左右])肺?([上中下])(?:叶|肺)"), lambda g: (_ZH[g[0]], _ZH[g[1]])),
)
ZONE_ONLY = re.compile(_en(r"(upper|middle|lower) lobe") + r"|(?<![左右双两肺])([上中下])叶")

_NUM = r"\d+(?:\.\d+)?"
_UNIT = r"(?:mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)(?![a-z])|毫米|厘米"
SIZE_CHAIN = re.compile(rf"{_NUM}\s*-?\s*(?:{_UNIT})?(?:\s*[x×*]\s*{_NUM}\s*-?\s*(?:{_UNIT})?)*")
SIZE_PART = re.compile(rf"({_NUM})\s*-?\s*({_UNIT})?")

SECTION_HEADING = re.compile(r"^\s*[【\[]?\s*(impressions?|conclusions?|summary|opinion|findings|诊断意见|影像诊断|"
                             r"影像学诊断|诊断|印象|结论|意见|影像所见|检查所见|影像表现|所见)\s*[】\]]?\s*(?:[:：]|$)")
_BODY_SECTIONS = ("findings", "影像所见", "检查所见", "影像表现", "所见")
SIDE_HEADING = re.compile(r"^\s*(right|left|右|左)\s*(?:lung|肺)\s*[:：]")
ANY_HEADING = re.compile(r"^\s*(?:[a-z][a-z &/]{1,30}|[\u4e00-\u9fff/]{1,8})\s*[:：]")
SENTENCE_END = re.compile(r"\.(?=\s|$)|[;；。！？!?]")
CLAUSE_END = re.compile(r"[,，;；]|\s(?:but|however|while)\s")
ANAPHOR = re.compile(_en(r"it|its|this|these|the (?:nodule|mass|lesion|opacity)") + r"|该|其|此|上述|病灶(?!\d)")


@dataclass
class _Sentence:
    text: str  # lower-cased
    side: str | None  # side of the enclosing "RIGHT LUNG:" / "右肺：" heading
    opens_line: bool  # first sentence of a line that starts with a heading


def _affirmed(pattern: re.Pattern, text: str) -> list[str]:
    """Clauses of `text` in which `pattern` occurs un-negated."""
    out = []
    for clause in CLAUSE_END.split(text):
        for m in pattern.finditer(clause):
            if not NEGATION.search(clause[: m.start()]) and not POST_NEGATION.match(clause[m.end():]):
                out.append(clause)
                break
    return out


def _first_label(table, text: str, default=None):
    for label, pattern in table:
        if _affirmed(pattern, text):
            return label
    return default


def _density_class(text: str) -> str | None:
    return _first_label(DENSITY_WORDS, text)


def _explicit_lobe(text: str) -> str | None:
    best = None
    for pattern, to_lobe in LOBE_PATTERNS:
        m = pattern.search(text)
        if m and (best is None or m.start() < best[0]):
            found = to_lobe(m.groups())
            lobe = found if isinstance(found, str) else _LOBE_OF.get(found)
            if lobe:
                best = (m.start(), lobe)
    return best[1] if best else None


def _zone_lobe(s: _Sentence) -> str | None:
    m = ZONE_ONLY.search(s.text)
    if not m:
        return None
    zone = m.group(1) or _ZH[m.group(2)]
    if zone == "middle":
        return "right_middle"
    return _LOBE_OF.get((s.side, zone)) if s.side else None


def _largest_size_mm(text: str) -> float | None:
    best = None
    for chain in SIZE_CHAIN.finditer(text):
        parts = SIZE_PART.findall(chain.group(0))
        units = [u for _, u in parts]
        for i, (number, _) in enumerate(parts):
            unit = next((u for u in units[i:] if u), None)
            if unit is None:
                continue
            value = float(number) * (10.0 if unit.startswith(("cm", "centi", "厘")) else 1.0)
            best = value if best is None else max(best, value)
    return best


def _sentences(block: str) -> list[_Sentence]:
    out, side = [], None
    for line in block.lower().splitlines():
        heading = ANY_HEADING.match(line)
        if heading:
            m = SIDE_HEADING.match(line)
            side = ("right" if m.group(1) in ("right", "右") else "left") if m else None
        pieces = [p.strip() for p in SENTENCE_END.split(line)]
        pieces = [p for p in pieces if p]
        out += [_Sentence(p, side, bool(heading) and i == 0) for i, p in enumerate(pieces)]
    return out


def _lesion_units(sentences: list[_Sentence]) -> list[list[_Sentence]]:
    """Group each lesion-introducing sentence with the sentences that go on describing it."""
    units, current, current_lobe = [], None, None
    for s in sentences:
        lobe = _explicit_lobe(s.text) or _zone_lobe(s)
        # A follow-up sentence may name the lobe only if the lesion has none yet ('location: RUL').
        may_follow = current is not None and not s.opens_line and (lobe is None or current_lobe is None)
        if may_follow and ANAPHOR.match(s.text):
            current.append(s)
        elif _affirmed(LESION, s.text):
            current = [s]
            units.append(current)
        elif (may_follow and not EFFUSION.search(s.text) and not EMPHYSEMA.search(s.text)
              and (lobe or _largest_size_mm(s.text) or _density_class(s.text)
                   or _first_label(MARGIN_WORDS, s.text) or _affirmed(SMOOTHISH, s.text))):
            current.append(s)
        else:
            current = None
            continue
        if len(current) == 1 or current_lobe is None:
            current_lobe = lobe
    return units


def _lesion(unit: list[_Sentence]) -> Lesion | None:
    text = "；".join(s.text for s in unit)
    lobe = next((lobe for s in unit if (lobe := _explicit_lobe(s.text) or _zone_lobe(s))), None)
    diameter = _largest_size_mm(text)
    if lobe is None or not diameter:
        return None
    density = DENSITY_WORD_DEFAULTS[_density_class(text) or "solid"]
    return Lesion(lobe=lobe, diameter_mm=round(diameter, 1), density=density,
                  margin=_first_label(MARGIN_WORDS, text, "smooth"))


def _graded(sentences: list[_Sentence], keyword: re.Pattern, grades) -> tuple[str, str, _Sentence] | None:
    """(clause, grade, sentence) of the first affirmed `keyword` mention, skipping pericardial ones."""
    for s in sentences:
        for clause in _affirmed(keyword, s.text):
            if keyword is EFFUSION and PERICARDIAL.search(clause):
                continue
            grade = _first_label(grades, clause) or _first_label(grades, s.text)
            return clause, grade, s
    return None


def _parse_block(block: str) -> Findings:
    sentences = _sentences(block)
    lesions = [lesion for unit in _lesion_units(sentences) if (lesion := _lesion(unit))]
    effusion = emphysema = None
    if found := _graded(sentences, EFFUSION, EFFUSION_GRADES):
        clause, grade, s = found
        side = _first_label(SIDES, clause) or _first_label(SIDES, s.text)
        if side is None:
            side = "bilateral" if re.search(r"effusions", s.text) or s.side is None else s.side
        effusion = Effusion(side=side, grade=grade or "small")
    if found := _graded(sentences, EMPHYSEMA, EMPHYSEMA_GRADES):
        _, grade, s = found
        emphysema = Emphysema(grade=grade or "mild", upper_predominant=bool(_affirmed(UPPER, s.text)))
    return Findings(lesions=lesions, effusion=effusion, emphysema=emphysema)


def _split_sections(text: str) -> tuple[str, str]:
    """(body, impression): lines under IMPRESSION / CONCLUSION / 诊断意见 / 印象 ... go to the second."""
    parts, current = {"body": [], "impression": []}, "body"
    for line in text.splitlines():
        m = SECTION_HEADING.match(line.lower())
        if m:
            current = "body" if m.group(1) in _BODY_SECTIONS else "impression"
            line = line[m.end():]
        parts[current].append(line)
    return "\n".join(parts["body"]), "\n".join(parts["impression"])


def parse_report(text: str) -> Findings:
    """Structured findings described by an English or Chinese report (see the module docstring).

    Lesions get lobe, diameter_mm, density (the default of their density words, solid when none) and
    margin; `center_mm` is None. Lesions without a lobe or a size are skipped.
    """
    body, impression = _split_sections(text)
    findings = _parse_block(body)
    if findings.is_normal and impression.strip():
        findings = _parse_block(impression)
    return findings


def implied_density(text: str) -> float | None:
    """Density control implied by the report's words (ground-glass 0.15, part-solid 0.5, solid 0.95).

    With several lesions it is their diameter³-weighted mean (`Findings.mean_lesion_density`). Without a
    measurable lesion, the density words of any affirmed nodule/mass sentence are used; None when the
    report implies no lesion density.
    """
    findings = parse_report(text)
    if findings.lesions:
        densities = {lesion.density for lesion in findings.lesions}
        return densities.pop() if len(densities) == 1 else findings.mean_lesion_density
    for s in _sentences(text):
        if _affirmed(LESION, s.text) and (cls := _density_class(s.text)):
            return DENSITY_WORD_DEFAULTS[cls]
    return None
