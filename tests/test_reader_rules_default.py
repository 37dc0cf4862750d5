"""The default reader (learned tagger + rules) on phrasing the tagger alone read wrongly (issue 25), its warnings,
and where each finding came from (`medgen read --details` / `--explain`)."""

from __future__ import annotations

import json

import pytest

from medgen import default_model_path
from medgen.cli.main import main as cli_main
from medgen.reader import ReportReader

READER_DIR = default_model_path() / "reader"
pytestmark = pytest.mark.skipif(not READER_DIR.is_dir(), reason="the default model has no reader")
CT_RATE = ("In the right lung lower lobe posterobasal segment, a solid nodule with a diameter of 18 mm was observed. "
           "Minimal pleural effusion is seen on the left. Emphysematous changes are observed in both lungs, more "
           "prominent in the upper lobes.")
US = ("FINDINGS: 2.7 x 2.1 cm part-solid nodule in the right upper lobe (series 3, image 45), previously 2.3 x 1.9 cm. "
      "There is a spiculated mass in the left lower lobe measuring approximately 30 mm.\n"
      "IMPRESSION:\n1. 2.7 cm part-solid right upper lobe nodule, increased.\n2. Left lower lobe mass.")


@pytest.fixture(scope="module")
def reader():
    return ReportReader.from_pretrained(READER_DIR)


def _lesions(findings):
    return [(x.lobe, x.diameter_mm, x.type, x.certainty) for x in findings.lesions]


def test_ct_rate_style_report(reader):
    findings = reader.read(CT_RATE).findings
    assert _lesions(findings) == [("right_lower", 18.0, "solid", "definite")]
    assert (findings.effusion.side, findings.effusion.grade, findings.effusion.certainty) == ("left", "small",
                                                                                              "definite")
    assert (findings.emphysema.grade, findings.emphysema.distribution) == ("mild", "upper")


def test_us_dictation_prior_size_and_restated_impression(reader):
    assert _lesions(reader.read(US).findings) == [("right_upper", 27.0, "part-solid", "definite"),
                                                  ("left_lower", 30.0, "solid", "definite")]


def test_the_tagger_alone_misread_the_ct_rate_report(reader):
    """The learned reader before the rules (mode="tagger") gets the CT-RATE style report wrong: the fix is the
    rules."""
    assert reader.read(CT_RATE, mode="tagger").findings.to_dict() != reader.read(CT_RATE).findings.to_dict()


def test_each_finding_keeps_its_certainty_cue_and_words(reader):
    result = reader.read("A 4 mm nodule in the RML cannot be excluded. Small left pleural effusion.")
    lesion = result.details[0]
    assert lesion["finding"] == "lesion 1" and lesion["certainty"] == "possible"
    assert lesion["cues"] == {"POSSIBLE_EXISTENCE": "cannot be excluded"}
    assert {(w["group"], w["text"]) for w in lesion["words"]} >= {("les", "nodule"), ("loc", "RML"), ("size", "4 mm")}
    assert result.details[1]["finding"] == "effusion" and result.language == "en"
    assert json.loads(json.dumps(result.to_dict()))["explain"][0]["certainty"] == "possible"


@pytest.mark.parametrize("text,needle", [
    ("Kein Pleuraerguss. Rundherd im rechten Oberlappen, 12 mm. Lungenemphysem.", "English or Chinese"),
    ("颅脑CT平扫：脑实质内未见异常密度影，脑室系统未见扩大，中线结构居中。", "no chest"),
])
def test_unknown_language_or_no_chest_words_are_warned_into_the_sidecar(reader, text, needle):
    from medgen.pipelines.layout_stage import reading_record

    result = reader.read(text)
    assert any(needle in w for w in result.warnings)
    assert any(needle in w for w in reading_record(result, None)["reader_warnings"])


def test_cli_explain_prints_findings_with_their_words(capsys):
    assert cli_main(["read", "--explain", "--report", CT_RATE]) == 0
    out = capsys.readouterr().out
    assert "lesion 1: right_lower, 18 mm, solid" in out and "'18 mm' -> size=size" in out
    assert "effusion: left, small; definite" in out and "emphysema: mild, upper" in out
