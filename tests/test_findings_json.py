"""Typed findings: JSON round trip with a schema version, type <-> density, and one clear error per problem."""

from __future__ import annotations

import json

import pytest

from medgen.findings import SCHEMA_VERSION, Effusion, Emphysema, Findings, FindingsError, Lesion


def _findings():
    return Findings([Lesion("right_upper", 24.0, 0.5, "lobulated", diameters_mm=(18.0, 24.0)),
                     Lesion("left_lower", 8.0, 0.1, certainty="possible")],
                    Effusion("left", "small", "possible"), Emphysema("moderate", True))


def test_json_round_trip_keeps_every_field():
    original = _findings()
    data = json.loads(original.to_json())
    assert data["schema_version"] == SCHEMA_VERSION and data["normal"] is False
    assert data["lesions"][0]["type"] == "part-solid" and data["lesions"][0]["diameters_mm"] == [24.0, 18.0]
    assert data["emphysema"] == {"grade": "moderate", "distribution": "upper", "certainty": "definite"}
    again = Findings.from_json(original.to_json())
    assert again == original
    assert Findings.from_json(Findings().to_json()).is_normal


def test_type_without_density_takes_the_word_default():
    data = {"lesions": [{"lobe": "right_middle", "diameter_mm": 12, "type": "ground-glass"}]}
    lesion = Findings.from_dict(data).lesions[0]
    assert lesion.density == 0.15 and lesion.type == "ground-glass" and lesion.margin == "smooth"


def test_old_dicts_without_version_still_load():
    old = {"lesions": [{"lobe": "left_upper", "diameter_mm": 20.0, "density": 0.9, "margin": "smooth",
                        "center_mm": [1, 2, 3]}], "effusion": None,
           "emphysema": {"grade": "mild", "upper_predominant": True}}
    findings = Findings.from_dict(old)
    assert findings.lesions[0].center_mm == (1.0, 2.0, 3.0) and findings.emphysema.distribution == "upper"


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"schema_version": 2}', "schema_version"),
    ('{"lesion": []}', "unknown field"),
    ('{"lesions": {}}', "must be a list"),
    ('{"lesions": [{"lobe": "right", "diameter_mm": 10, "density": 0.5}]}', r"lesions\[0\].*lobe"),
    ('{"lesions": [{"lobe": "left_upper", "diameter_mm": -1, "density": 0.5}]}', "diameter_mm"),
    ('{"lesions": [{"lobe": "left_upper", "diameter_mm": 10}]}', "needs `density`"),
    ('{"lesions": [{"lobe": "left_upper", "diameter_mm": 10, "density": "0.5"}]}', "must be a number"),
    ('{"lesions": [{"lobe": "left_upper", "diameter_mm": true, "density": 0.5}]}', "must be a number"),
    ('{"lesions": [{"lobe": "left_upper", "diameter_mm": 10, "type": "solid", "density": 0.1}]}', "contradicts"),
    ('{"lesions": [{"lobe": "left_upper", "diameter_mm": 10, "type": "glassy"}]}', "type"),
    ('{"effusion": {"side": "both", "grade": "small"}}', "effusion.*side"),
    ('{"emphysema": {"grade": "mild", "distribution": "lower"}}', "distribution"),
    ('{"normal": true, "effusion": {"side": "left", "grade": "small"}}', "normal"),
    ('{"lesions": [{"lobe": "left_upper", "diameter_mm": 10, "density": 0.5, "certainty": "maybe"}]}', "certainty"),
])
def test_invalid_findings_raise_one_clear_error(text, message):
    with pytest.raises(FindingsError, match=message):
        Findings.from_json(text)


def test_diameters_must_agree_with_the_long_axis():
    with pytest.raises(ValueError, match="diameters_mm"):
        Lesion("left_upper", 20.0, 0.5, diameters_mm=(15.0, 10.0))
    with pytest.raises(ValueError, match="1 to 3"):
        Lesion("left_upper", 20.0, 0.5, diameters_mm=(20.0, 15.0, 10.0, 5.0))
