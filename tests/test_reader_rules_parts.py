"""Parts of the rule reader: language, sections, ConText assertion, sizes, sites, and combining with the tagger."""

from __future__ import annotations

import pytest

from medgen.reader.combine import combine_findings, mark_agreement
from medgen.reader.context import assertions, certainty, find_modifiers, scopes
from medgen.reader.decode import TaggedSpan
from medgen.reader.grammar import read_rules
from medgen.reader.sites import find_sites, resolve_sides
from medgen.reader.sizes import find_sizes
from medgen.reader.text import detect_language, find_sections, segment, tokenize


@pytest.mark.parametrize("text,language", [
    ("RUL: 12 mm nodule.", "en"), ("右肺上叶见结节。", "zh"), ("Findings：RLL见一part-solid结节，约0.9cm。", "zh"),
    ("Kein Pleuraerguss. Rundherd im rechten Oberlappen, 12 mm.", None),
    ("Nodule pulmonaire de 12 mm dans le lobe supérieur droit. Pas d'épanchement pleural.", None),
    ("CONCLUSION:\n1. 1.7 cm non-solid lesion, RUL; tissue sampling could be considered.", "en"),
])
def test_language(text, language):
    assert detect_language(text) == language


def test_sections_categories_and_structured_fields():
    text = ("CLINICAL HISTORY: cough.\nFINDINGS:\nLungs and airways: nodule.\nUpper abdomen: cyst.\n"
            "Emphysema: none\nRight upper lobe: 2.1 cm mass.\nIMPRESSION: mass.")
    cats = [(s.heading, s.category) for s in find_sections(text, "en")[1:]]
    assert cats == [("CLINICAL HISTORY", "history"), ("FINDINGS", "findings"), ("Lungs and airways", "findings"),
                    ("Upper abdomen", "other_organ"), ("IMPRESSION", "impression")]
    zh = "【检查所见】结节。\n诊断意见：结节。\n三、纵隔及心脏：正常。\n纵隔窗：两侧胸腔见微量积液。"
    assert [s.category for s in find_sections(zh, "zh")[1:]] == ["findings", "impression", "other_organ", "findings"]


def _assert(text: str, language: str, target: str) -> str:
    tokens, doc = tokenize(text, language)
    seg = segment(text, language)
    start = text.index(target)
    mods = find_modifiers(text, language, doc)
    places = [(x.start, x.end) for x in find_sites(text, language)]
    found = assertions([(start, start + len(target))], scopes(text, language, mods, seg, tokens,
                                                              [(start, start + len(target))], places))
    return certainty(found[0])


@pytest.mark.parametrize("text,target,expected", [
    ("No pulmonary nodule, pleural effusion or emphysema.", "emphysema", "-"),
    ("No effusion, moderate emphysema.", "emphysema", "+"),
    ("No change in the right upper lobe nodule.", "nodule", "+"),  # PSEUDO: 'no change' negates nothing
    ("No suspicious pulmonary nodules.", "nodules", "-"),  # another category does not end the negation
    ("No effusion but a nodule is seen.", "nodule", "+"),  # TERMINATE
    ("A 4 mm nodule in the RML cannot be excluded.", "nodule", "?"),
    ("Pleural effusion: none.", "effusion", "-"),
    ("A non-solid opacity in the RML, sorry, left lower lobe (0.9 by 0.7 cm) may be present.", "opacity", "?"),
    ("A subsolid opacity in the LLL, sorry, RLL superior segment (2.0 × 1.5 cm) is not excluded.", "opacity", "?"),
    ("The nodule, not present previously, measures 9 mm.", "nodule", "+"),  # new, not negated
    ("History of pleural effusion.", "effusion", "-"),
    ("双侧胸腔未见积液。", "积液", "-"),
    ("右肺上叶部分实性结节考虑MIA可能。", "结节", "+"),  # 可能's scope stops at 考虑, its own category
    ("考虑轻度肺气肿可能。", "肺气肿", "?"),
    ("右侧胸腔少量积液不除外。", "积液", "?"),
    ("原右肺中叶结节已吸收。", "结节", "-"),
    ("积液未吸收。", "积液", "+"),  # PSEUDO: not absorbed is still there
    # a modifier that ends its clause hedges nothing in the next list item
    ("诊断意见：右肺下叶结节，考虑恶性可能；肺气肿。", "肺气肿", "+"),
    ("Right lower lobe nodule, possibly malignant; emphysema.", "emphysema", "+"),
    ("Possibly in the right lower lobe, a nodule.", "nodule", "?"),  # the clause named a place: goes on
])
def test_context_assertion(text, target, expected):
    language = detect_language(text)
    assert _assert(text, language, target) == expected


def test_sizes_are_found_with_their_units():
    text = "48x41 mm; 2.7 x 2.1 cm (series 3, image 45); two centimeters; 大小约2.3cm×1.8cm; 约十二毫米; 6-12 months"
    assert [s for _, _, s in find_sizes(text)] == [(48.0, 41.0), (27.0, 21.0), (20.0,), (23.0, 18.0), (12.0,)]


@pytest.mark.parametrize("text,lobes", [
    ("In the right lung lower lobe posterobasal segment, a nodule", ["right_lower"]),
    ("superior segment of the left lower lobe", ["left_lower"]),
    ("In the lateral segment of the middle lobe", ["right_middle"]),
    ("Inferior lingular segment", ["left_upper"]),
    ("right upper lobe: a 6 mm nodule in the apical segment", ["right_upper", "right_upper"]),
    ("左下肺背段小结节，右肺中叶内侧段，左肺上叶尖后段", ["left_lower", "right_middle", "left_upper"]),
])
def test_sites_read_segments_into_lobes(text, lobes):
    language = detect_language(text) or "en"
    assert [s.lobe for s in resolve_sides(find_sites(text, language), lambda p: 0)] == lobes


def _span(text, group, value, start, end, score=0.99):
    return TaggedSpan(group, value, start, end, text[start:end], score, "tagger")


def test_combine_fills_what_the_rules_leave_unstated_and_reports_tagger_only_findings():
    text = "A nodule in the right upper lobe, fourteen mils across. Zz qq in the left lower lobe."
    rules = read_rules(text)
    assert [x.diameter_mm for x in combine_findings(text, [], rules)[0].lesions] == [10.0]  # no size: default
    at = text.index
    tagger = [_span(text, group, value, at(word), at(word) + len(word)) for group, value, word in (
        ("les", "+", "nodule"), ("loc", "right_upper", "right upper lobe"), ("size", "size", "fourteen mils"),
        ("les", "+", "Zz qq"), ("loc", "left_lower", "left lower lobe"))]
    findings, warnings, _, disagreements = combine_findings(text, tagger, rules)
    assert [(x.lobe, x.diameter_mm) for x in findings.lesions] == [("right_upper", 14.0)]
    assert not any("no size given" in w for w in warnings)
    assert any(d["read_by"] == "tagger" and d["value"]["lobe"] == "left_lower" for d in disagreements)


def test_combine_does_not_fill_a_size_the_rules_read_as_a_prior_one():
    text = "A nodule in the right upper lobe, previously 7 mm."
    at = text.index
    tagger = [_span(text, group, value, at(word), at(word) + len(word)) for group, value, word in (
        ("les", "+", "nodule"), ("loc", "right_upper", "right upper lobe"), ("size", "size", "7 mm"))]
    findings, warnings, _, _ = combine_findings(text, tagger, read_rules(text))
    assert [x.diameter_mm for x in findings.lesions] == [10.0] and any("no size given" in w for w in warnings)


def test_agreeing_spans_are_marked_both():
    text = "Small left pleural effusion."
    rules = read_rules(text)
    eff = text.index("pleural effusion")
    marked = mark_agreement(rules.spans, [_span(text, "eff", "+", eff, eff + 16), _span(text, "eside", "right", 6, 10)])
    assert {(s.group, s.source) for s in marked} >= {("eff", "both"), ("eside", "rules")}
