"""MONAI transform chain: shapes, value range, RAS geometry, exact HU inverse, carried report/density."""

import math
import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medgen.dataset.transforms import DataConfig, build_dataset, build_transforms, collate_reports
from medgen.io import save_nifti, write_dicom_series
from medgen.volume import Volume, intensity_to_hu, make_affine

MARKER_MM = np.array([62.5, 42.5, 52.5])  # patient's right, anterior, superior (RAS+)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A 64^3 5 mm volume (air, a -850 HU block, a +400 HU marker on the right) as NIfTI and DICOM."""
    root = tmp_path_factory.mktemp("transforms")
    affine = make_affine((64, 64, 64), 5.0)
    hu = np.full((64, 64, 64), -1000.0, dtype=np.float32)
    hu[12:52, 12:52, 12:52] = -850.0
    labels = np.zeros((64, 64, 64), dtype=np.uint8)
    labels[12:52, 12:52, 12:52] = 3
    marker = np.round(np.linalg.solve(affine, [*MARKER_MM, 1.0])[:3]).astype(int)
    hu[tuple(slice(m - 1, m + 2) for m in marker)] = 400.0
    labels[tuple(slice(m - 1, m + 2) for m in marker)] = 8
    volume = Volume(hu, affine)
    nifti = save_nifti(volume, root / "img.nii.gz")
    label = save_nifti(Volume(labels, affine), root / "lab.nii.gz", dtype=np.uint8)
    dicom = root / "series"
    write_dicom_series(volume, dicom)
    common = {"label": str(label), "report": "Solid nodule in the right upper lobe.", "language": "en",
              "findings": {"lesions": [{"lobe": "right_upper"}]}, "split": "train"}
    return {
        "nifti": {"id": "a", "image": str(nifti), "density": 0.9, **common},
        "dicom": {"id": "b", "image": str(dicom), "density": None, **common},
    }


def _marker_world(image) -> np.ndarray:
    """World position (mm) of the bright marker's centre of mass, through the MetaTensor's affine."""
    array = image[0].numpy()
    index = np.argwhere(array > 0.3).mean(axis=0)
    return (image.affine.numpy() @ [*index, 1.0])[:3]


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_chain_geometry_values_and_carried_fields(sources, fmt):
    entry = sources[fmt]
    out = build_transforms(DataConfig())(entry)
    image = out["image"]
    assert tuple(image.shape) == (1, 64, 64, 64)
    assert image.dtype == torch.float32
    assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0
    affine = image.affine.numpy()
    np.testing.assert_allclose(affine[:3, :3], np.diag([5.0, 5.0, 5.0]), atol=1e-4)  # RAS, 5 mm
    np.testing.assert_allclose(_marker_world(image), MARKER_MM, atol=1.0)  # laterality kept
    # Exact inverse of the intensity window inside the -850 HU block.
    hu = intensity_to_hu(image[0, 14:38, 14:38, 14:38])
    np.testing.assert_allclose(hu.numpy(), -850.0, atol=0.05)
    assert float(intensity_to_hu(image.max())) == pytest.approx(400.0, abs=0.05)
    assert out["report"] == entry["report"]
    assert out["findings"] == entry["findings"]
    expected = entry["density"] if entry["density"] is not None else math.nan
    assert math.isnan(out["density"]) if math.isnan(expected) else out["density"] == pytest.approx(expected)


def test_resample_and_crop_to_a_smaller_grid_with_label(sources):
    config = DataConfig(shape=32, spacing=(10.0, 10.0, 10.0), with_label=True)
    out = build_transforms(config)(sources["nifti"])
    image, label = out["image"], out["label"]
    assert tuple(image.shape) == tuple(label.shape) == (1, 32, 32, 32)
    assert label.dtype == torch.uint8
    assert set(torch.unique(label).tolist()) <= {0, 3, 8}  # nearest neighbour: no blended label values
    np.testing.assert_allclose(image.affine.numpy()[:3, :3], np.diag([10.0] * 3), atol=1e-4)
    np.testing.assert_allclose(label.affine.numpy(), image.affine.numpy())
    np.testing.assert_allclose(_marker_world(image), MARKER_MM, atol=5.0)


def test_padding_is_air(sources):
    out = build_transforms(DataConfig(shape=(80, 64, 64)))(sources["nifti"])
    image = out["image"]
    assert tuple(image.shape) == (1, 80, 64, 64)
    assert float(image[0, :8].max()) == -1.0 and float(image[0, -8:].max()) == -1.0


def test_disk_cache_keeps_affine(sources, tmp_path, monkeypatch):
    config = DataConfig(shape=32, spacing=10.0, cache="disk", cache_dir=str(tmp_path / "cache"))
    entries = [sources["nifti"], sources["dicom"]]
    first = [build_dataset(entries, config)[i] for i in range(2)]
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2

    def no_loading(path):
        raise AssertionError(f"cache miss: {path} was loaded again")

    monkeypatch.setattr("medgen.dataset.transforms.load_volume", no_loading)
    again = build_dataset(entries, config)  # a fresh dataset must be served from the cache files
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI warns and recomputes when a cache file cannot be loaded
        items = [again[i] for i in range(2)]
    for item, reference in zip(items, first, strict=True):
        assert isinstance(item["image"], MetaTensor)
        np.testing.assert_allclose(item["image"].affine.numpy()[:3, :3], np.diag([10.0] * 3), atol=1e-4)
        np.testing.assert_allclose(item["image"].affine.numpy(), reference["image"].affine.numpy())
        torch.testing.assert_close(item["image"].as_tensor(), reference["image"].as_tensor())
        assert item["report"] == reference["report"]
    assert math.isnan(items[1]["density"])


def test_memory_cache_and_collate(sources):
    dataset = build_dataset([sources["nifti"], sources["dicom"]], DataConfig(shape=32, cache="memory"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_reports)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (2, 1, 32, 32, 32)
    assert tuple(batch["image"].affine.shape) == (2, 4, 4)
    assert batch["report"] == [sources["nifti"]["report"]] * 2
    assert batch["density"].dtype == torch.float32
    assert batch["density"][0].item() == pytest.approx(0.9) and torch.isnan(batch["density"][1])
    assert batch["findings"][0] == sources["nifti"]["findings"]


def test_config_from_dict_and_errors():
    config = DataConfig.from_dict({"manifest": "x.jsonl", "shape": [32, 32, 32], "spacing": [10, 10, 10],
                                   "cache": "memory", "num_workers": 0})
    assert config.shape == (32, 32, 32) and config.spacing == (10.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="unknown data config key"):
        DataConfig.from_dict({"shap": 32})
    with pytest.raises(ValueError, match="`cache` must be one of"):
        DataConfig(cache="ssd")
    with pytest.raises(ValueError, match="`cache_dir` is required"):
        DataConfig(cache="disk")


def test_no_flips_in_the_chain():
    names = [type(t).__name__ for t in build_transforms(DataConfig(with_label=True)).transforms]
    assert not any("Flip" in name for name in names)
