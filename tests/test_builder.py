"""Synthetic dataset builder: determinism across worker counts, proportions, density labels, CLI."""

import gzip
import json

import numpy as np
import pytest

from medgen.dataset.builder import build_synthetic_dataset, plan_subjects
from medgen.dataset.manifest import read_manifest
from medgen.errors import OutputExistsError
from medgen.findings import LABELS
from medgen.io import load_nifti, load_volume
from medgen.volume import hu_to_density

N = 20
PARAMS = dict(n=N, shape=32, spacing=10.0, seed=7, dicom_fraction=0.25, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same dataset built with 2 worker processes and in-process."""
    root = tmp_path_factory.mktemp("builder")
    two = build_synthetic_dataset(root / "two", workers=2, **PARAMS)
    one = build_synthetic_dataset(root / "one", workers=1, **PARAMS)
    return two, one


def test_same_seed_same_dataset_whatever_the_worker_count(built):
    two, one = built
    assert two.read_bytes() == one.read_bytes()  # manifest.jsonl
    rows = read_manifest(two)
    for row in rows:
        a = row["image"]
        b = a.replace(str(two.parent), str(one.parent), 1)
        if row["format"] == "nifti":
            assert open(a, "rb").read() == open(b, "rb").read()
        else:
            np.testing.assert_array_equal(load_volume(a).array, load_volume(b).array)
        label = row["label"]
        assert open(label, "rb").read() == open(label.replace(str(two.parent), str(one.parent), 1), "rb").read()


def test_other_seed_differs(tmp_path, built):
    other = build_synthetic_dataset(tmp_path / "s8", workers=1, **{**PARAMS, "n": 3, "seed": 8})
    first = load_nifti(read_manifest(built[1])[0]["image"]).array
    assert not np.array_equal(first, load_nifti(read_manifest(other)[0]["image"]).array)


def test_layout_proportions_and_rows(built):
    manifest = built[0]
    rows = read_manifest(manifest)
    assert [r["id"] for r in rows] == [f"case{i:05d}" for i in range(N)]
    splits = [r["split"] for r in rows]
    assert splits.count("test") == 2 and splits.count("val") == 1 and splits.count("train") == N - 3
    assert sum(r["language"] == "zh" for r in rows) == 8  # zh_fraction 0.4
    dicom = [r for r in rows if r["format"] == "dicom"]
    assert len(dicom) == 5  # dicom_fraction 0.25
    for row in rows:
        image = load_volume(row["image"])
        assert image.shape == (32, 32, 32) and image.spacing == pytest.approx((10.0, 10.0, 10.0))
        assert image.orientation == "RAS"
        if row["format"] == "dicom":
            assert (manifest.parent / "dicom" / row["id"]).is_dir()
        else:
            header = gzip.open(row["image"]).read(348)
            assert b"SYNTHETIC" in header
            sidecar = json.loads((manifest.parent / "images" / f"{row['id']}.json").read_text(encoding="utf-8"))
            assert sidecar["findings"] == row["findings"] and sidecar["phantom_seed"] == row["seed"]
        report = (manifest.parent / "reports" / f"{row['id']}.txt").read_text(encoding="utf-8")
        assert report.strip() == row["report"].strip()
    params = json.loads((manifest.parent / "dataset.json").read_text())
    assert params["n"] == N and params["seed"] == 7
    # The test split is written with held-out phrasing families only.
    train_families = {r["phrasing"] for r in rows if r["split"] != "test"}
    assert not train_families & {r["phrasing"] for r in rows if r["split"] == "test"}


def test_density_label_is_the_mask_mean_hu(built):
    rows = read_manifest(built[0])
    assert {r["density_source"] for r in rows} <= {"mask", "words", "unknown"}
    masked = [r for r in rows if r["density_source"] == "mask"]
    assert masked, "expected some subjects with lesions"
    for row in rows:
        if row["density_source"] == "unknown":
            assert row["density"] is None and not row["findings"]["lesions"]
            continue
        assert row["findings"]["lesions"] and 0.0 <= row["density"] <= 1.0
        if row["density_source"] == "mask":
            hu = load_volume(row["image"]).array
            lesion = load_nifti(row["label"]).array.astype(np.uint8) == LABELS["lesion"]
            assert row["density"] == pytest.approx(hu_to_density(hu[lesion].mean()), abs=1e-6)


def test_plan_is_exact_and_seeded():
    plans = plan_subjects(200, seed=1, dicom_fraction=0.1, zh_fraction=0.4, val_fraction=0.05, test_fraction=0.1)
    assert sum(p.split == "test" for p in plans) == 20 and sum(p.split == "val" for p in plans) == 10
    assert sum(p.language == "zh" for p in plans) == 80 and sum(p.format == "dicom" for p in plans) == 20
    assert plans == plan_subjects(200, seed=1, dicom_fraction=0.1)
    assert plans != plan_subjects(200, seed=2, dicom_fraction=0.1)
    assert {p.language for p in plan_subjects(10, languages=("zh",))} == {"zh"}
    assert {p.language for p in plan_subjects(10, languages=("en",))} == {"en"}


def test_refuses_non_empty_folder_and_is_atomic(tmp_path, monkeypatch):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        build_synthetic_dataset(occupied, n=1, shape=32, spacing=10.0, workers=1, progress=False)
    with pytest.raises(OutputExistsError, match="not a medgen dataset"):
        build_synthetic_dataset(occupied, n=1, shape=32, spacing=10.0, workers=1, progress=False, overwrite=True)
    assert (occupied / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    manifest = build_synthetic_dataset(empty, n=2, shape=32, spacing=10.0, workers=1, progress=False)
    assert len(read_manifest(manifest)) == 2
    manifest = build_synthetic_dataset(empty, n=1, shape=32, spacing=10.0, workers=1, progress=False,
                                       overwrite=True)
    assert len(read_manifest(manifest)) == 1 and len(list((empty / "labels").iterdir())) == 1

    import medgen.dataset.builder as builder

    calls = []
    real = builder.build_subject

    def failing(plan, **kwargs):
        calls.append(plan.index)
        if plan.index == 1:
            raise RuntimeError("disk full")
        return real(plan, **kwargs)

    monkeypatch.setattr(builder, "build_subject", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        build_synthetic_dataset(tmp_path / "broken", n=3, shape=32, spacing=10.0, workers=1, progress=False)
    assert calls == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "occupied"]  # nothing half-written


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "`n` must be >= 1"), ({"n": 1, "dicom_fraction": 1.5}, "`dicom_fraction` must be in"),
    ({"n": 1, "languages": ("fr",)}, "`languages` must be"), ({"n": 1, "workers": 0}, "`workers` must be"),
    ({"n": 1, "val_fraction": 0.6, "test_fraction": 0.6}, "must be <= 1"),
])
def test_invalid_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_synthetic_dataset(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


def test_built_rows_go_through_the_transforms(built):
    from medgen.dataset.transforms import DataConfig, build_transforms

    rows = read_manifest(built[0])
    transform = build_transforms(DataConfig(shape=32, spacing=10.0, with_label=True))
    for row in [next(r for r in rows if r["format"] == f) for f in ("nifti", "dicom")]:
        out = transform(row)
        assert tuple(out["image"].shape) == tuple(out["label"].shape) == (1, 32, 32, 32)
        np.testing.assert_allclose(out["image"].affine.numpy(), out["label"].affine.numpy())
        expected = load_nifti(row["label"]).array.astype(np.uint8)
        np.testing.assert_array_equal(out["label"][0].numpy(), expected)  # same grid: no resampling shift


def test_cli_synth_and_phantom(tmp_path, capsys):
    from medgen.cli.main import main

    out = tmp_path / "ds"
    assert main(["data", "synth", "--n", "3", "--shape", "32", "--spacing", "10", "--out", str(out),
                 "--seed", "3", "--workers", "1", "--dicom-fraction", "0.34", "--quiet"]) == 0
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 3 and sum(r["format"] == "dicom" for r in rows) == 1
    assert main(["data", "synth", "--n", "3", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err

    image = tmp_path / "demo" / "phantom.nii.gz"
    assert main(["data", "phantom", "--out", str(image), "--seed", "4", "--shape", "32", "--spacing", "10"]) == 0
    for name in ("phantom.nii.gz", "phantom.json", "phantom_label.nii.gz", "phantom.txt", "phantom.png"):
        assert (image.parent / name).is_file(), name
    volume = load_nifti(image)
    assert volume.shape == (32, 32, 32) and volume.orientation == "RAS"
    assert main(["data", "phantom", "--out", str(image)]) == 2  # exists, no --overwrite
