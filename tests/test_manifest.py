"""Manifest: jsonl round trip, relative paths, and errors that name the line."""

import json

import pytest

from medgen.dataset.manifest import REQUIRED_KEYS, read_manifest, write_manifest
from medgen.errors import InputFileError


def _row(i, root, **extra):
    row = {"id": f"case{i:05d}", "image": str(root / "images" / f"case{i:05d}.nii.gz"),
           "label": str(root / "labels" / f"case{i:05d}.nii.gz"), "report": "Solid nodule in the 右肺.",
           "language": "en", "density": 0.25, "density_source": "mask",
           "findings": {"lesions": [], "effusion": None, "emphysema": None}, "split": "train",
           "phrasing": "en-structured", "format": "nifti"}
    row.update(extra)
    return row


def test_round_trip_relative_paths(tmp_path):
    rows = [_row(0, tmp_path), _row(1, tmp_path, density=None, density_source="unknown", label=None,
                                     split="test", language="zh")]
    path = write_manifest(tmp_path / "manifest.jsonl", rows)
    stored = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert stored[0]["image"] == "images/case00000.nii.gz"  # relative on disk: the folder can move
    assert stored[1]["label"] is None
    assert "右肺" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes

    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)
    back = read_manifest(moved / "manifest.jsonl")
    assert back[0]["image"] == str(moved.resolve() / "images" / "case00000.nii.gz")
    assert back[1] == {**rows[1], "image": str(moved.resolve() / "images" / "case00001.nii.gz")}
    assert back[1]["density"] is None


def test_absolute_paths_outside_the_folder_are_kept(tmp_path):
    outside = tmp_path / "elsewhere" / "x.nii.gz"
    path = write_manifest(tmp_path / "m" / "manifest.jsonl", [_row(0, tmp_path, image=str(outside))])
    assert read_manifest(path)[0]["image"] == str(outside)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    good = json.dumps(_row(0, tmp_path))
    path.write_text(good + "\n\n" + '{"id": "x", "image": ' + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"line 3: invalid JSON"):
        read_manifest(path)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_key_names_line_and_key(tmp_path, key):
    row = _row(0, tmp_path)
    del row[key]
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(_row(1, tmp_path)) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=rf"line 2: missing required key\(s\) \['{key}'\]"):
        read_manifest(path)


@pytest.mark.parametrize(
    "change, message",
    [({"split": "training"}, "`split` must be one of"), ({"language": "fr"}, "`language` must be one of"),
     ({"density": 1.5}, "`density` must be a number in"), ({"density": "0.3"}, "`density` must be a number in"),
     ({"density_source": "guess"}, "`density_source` must be one of")],
)
def test_invalid_values(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        write_manifest(tmp_path / "manifest.jsonl", [_row(0, tmp_path, **change)])
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(_row(0, tmp_path, **change)) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="line 1: " + message):
        read_manifest(path)
    assert not list(tmp_path.glob(".manifest.jsonl.*"))  # no temporary left behind


def test_duplicate_ids_and_missing_file(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps(_row(0, tmp_path)) + "\n" + json.dumps(_row(0, tmp_path)) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="line 2: duplicate id 'case00000'"):
        read_manifest(path)
    with pytest.raises(InputFileError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
