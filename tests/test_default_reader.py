"""The report reader shipped with the default model: reads findings offline, with warnings where it must."""

from __future__ import annotations

import json

import pytest

from medgen import default_model_path
from medgen.cli.main import main as cli_main
from medgen.reader import ReportReader

READER_DIR = default_model_path() / "reader"
pytestmark = pytest.mark.skipif(not READER_DIR.is_dir(), reason="the default model has no reader")


@pytest.fixture(scope="module")
def reader():
    return ReportReader.from_pretrained(READER_DIR)


def test_a_structured_report_is_read_exactly(reader):
    text = ("FINDINGS: There is a 24 mm part-solid nodule in the right upper lobe with lobulated margins. "
            "There is a small left pleural effusion.\nIMPRESSION:\n1. 24 mm part-solid nodule, right upper lobe.")
    findings = reader.read(text).findings
    assert [(x.lobe, x.diameter_mm, x.type, x.margin) for x in findings.lesions] == [
        ("right_upper", 24.0, "part-solid", "lobulated")]
    assert (findings.effusion.side, findings.effusion.grade) == ("left", "small") and findings.emphysema is None


def test_negations_leave_a_normal_study(reader):
    result = reader.read("No pulmonary nodule or mass. No pleural effusion. No emphysema.")
    assert result.findings.is_normal and not result.warnings


def test_chinese_report(reader):
    findings = reader.read("右肺下叶见一实性结节，大小约1.2×1.0cm，边缘可见毛刺。左侧胸腔见少量积液。").findings
    assert [(x.lobe, x.diameter_mm, x.type) for x in findings.lesions] == [("right_lower", 12.0, "solid")]
    assert findings.effusion.side == "left"


def test_unrelated_text_gets_a_warning(reader):
    result = reader.read("The quarterly budget meeting moved to Thursday afternoon in the main conference room.")
    assert result.findings.is_normal
    assert any("nothing it knows" in w for w in result.warnings)


def test_long_report_is_read_in_windows_not_truncated(reader):
    filler = " ".join(["Heart size is normal. The central airways are patent."] * 30)
    result = reader.read(filler + " There is a 31 mm solid mass in the left lower lobe.")
    assert result.n_windows > 1
    assert [(x.lobe, x.diameter_mm) for x in result.findings.lesions] == [("left_lower", 31.0)]


def test_cli_reads_with_the_default_reader(capsys):
    assert cli_main(["read", "--report", "LLL: 9 mm ground-glass nodule."]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert findings["lesions"][0]["lobe"] == "left_lower" and findings["lesions"][0]["type"] == "ground-glass"
