"""NIfTI and sidecar I/O: HU and geometry survive, and nibabel, MONAI and SimpleITK agree on geometry."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from medgen.errors import InputFileError, OutputExistsError
from medgen.io import load_volume
from medgen.io.nifti import load_nifti, reorient, save_nifti
from medgen.io.sidecar import provenance, read_sidecar, sidecar_path, write_sidecar
from medgen.volume import Volume, make_affine

SHAPE = (14, 11, 7)
SPACING = (0.7, 0.9, 2.5)
ORIGIN = (31.5, -48.0, 102.25)


def rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def hu_volume(affine: np.ndarray, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1024, 1800, SHAPE).astype(np.int16), affine)


def lps_ordered_affine() -> np.ndarray:
    """Voxel axes that increase toward Left, Posterior, Superior: nibabel must reorient it to RAS."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-SPACING[0], -SPACING[1], SPACING[2]])
    affine[:3, 3] = ORIGIN
    return affine


def world_of_values(volume: Volume) -> dict[int, tuple]:
    """World position of each voxel keyed by its (unique) value: independent of voxel order."""
    index = np.argwhere(np.ones(volume.shape, bool))
    world = volume.world_coordinates(index)
    return {int(volume.array[tuple(i)]): tuple(np.round(w, 4)) for i, w in zip(index, world, strict=True)}


def unique_volume(affine: np.ndarray) -> Volume:
    return Volume(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) - 1024, affine)


def test_round_trip_keeps_hu_and_geometry(tmp_path):
    volume = hu_volume(make_affine(SHAPE, SPACING, ORIGIN))
    path = save_nifti(volume, tmp_path / "ct.nii.gz")
    loaded = load_nifti(path)
    assert loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=1e-5)
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    assert img.header.get_xyzt_units() == ("mm", "sec")
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_sform(), img.get_qform(), atol=1e-5)


def test_hu_are_rounded_and_clipped_to_int16(tmp_path):
    array = np.zeros(SHAPE, np.float32)
    array[0, 0, 0], array[1, 0, 0], array[2, 0, 0] = 40.6, -1e6, 1e6
    save_nifti(Volume(array, np.eye(4)), tmp_path / "a.nii")
    data = np.asanyarray(nib.load(tmp_path / "a.nii").dataobj)
    assert data.dtype == np.int16
    assert (data[0, 0, 0], data[1, 0, 0], data[2, 0, 0]) == (41, -32768, 32767)


def test_non_finite_voxels_fail(tmp_path):
    array = np.zeros(SHAPE, np.float32)
    array[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_nifti(Volume(array, np.eye(4)), tmp_path / "a.nii.gz")
    assert not list(tmp_path.iterdir())


def test_label_map_uint8(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:5, 3:6, 1:3] = 8
    path = save_nifti(Volume(labels, make_affine(SHAPE, SPACING)), tmp_path / "labels.nii.gz", dtype=np.uint8)
    assert nib.load(path).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(load_nifti(path).array.astype(np.uint8), labels)


def test_lps_input_is_reoriented_to_ras_without_moving_voxels(tmp_path):
    volume = unique_volume(lps_ordered_affine())
    assert volume.orientation == "LPS"
    path = save_nifti(volume, tmp_path / "lps.nii.gz")
    assert nib.aff2axcodes(nib.load(path).affine) == ("R", "A", "S")
    loaded = load_nifti(path)
    assert loaded.orientation == "RAS"
    assert loaded.spacing == pytest.approx(SPACING)
    assert world_of_values(loaded) == world_of_values(volume)


def test_reorient_matches_nibabel_as_closest_canonical():
    volume = unique_volume(lps_ordered_affine())
    canonical = nib.as_closest_canonical(nib.Nifti1Image(volume.array, volume.affine))
    ours = reorient(volume, "RAS")
    np.testing.assert_array_equal(ours.array, np.asanyarray(canonical.dataobj))
    np.testing.assert_allclose(ours.affine, canonical.affine)


def geometry_cases():
    oblique = make_affine(SHAPE, SPACING, ORIGIN)
    oblique[:3, :3] = rotation_z(12.0) @ oblique[:3, :3]
    return {"lps-ordered": lps_ordered_affine(), "oblique": oblique}


@pytest.mark.parametrize("case", ["lps-ordered", "oblique"])
def test_nibabel_monai_and_simpleitk_agree(tmp_path, case):
    sitk = pytest.importorskip("SimpleITK")
    from monai.transforms import LoadImage

    volume = hu_volume(geometry_cases()[case])
    path = save_nifti(volume, tmp_path / f"{case}.nii.gz")
    ours = load_nifti(path)
    expected_spacing = np.asarray(SPACING)
    direction_ras = ours.affine[:3, :3] / expected_spacing

    img = nib.load(path)
    np.testing.assert_allclose(img.affine, ours.affine, atol=1e-4)
    assert img.shape == ours.shape

    meta_tensor = LoadImage(image_only=True)(str(path))
    assert tuple(meta_tensor.shape) == ours.shape
    np.testing.assert_allclose(np.asarray(meta_tensor.affine), ours.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(meta_tensor), ours.array)

    image = sitk.ReadImage(str(path))
    assert image.GetSize() == ours.shape
    np.testing.assert_allclose(image.GetSpacing(), expected_spacing, atol=1e-5)
    flip = np.array([-1.0, -1.0, 1.0])  # ITK is LPS: x and y negated
    np.testing.assert_allclose(image.GetOrigin(), flip * ours.affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), flip[:, None] * direction_ras, atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), ours.array)


def test_descrip_is_labelled_synthetic(tmp_path):
    volume = hu_volume(np.eye(4))
    default = save_nifti(volume, tmp_path / "a.nii.gz")
    assert nib.load(default).header["descrip"].item().startswith(b"SYNTHETIC")
    custom = save_nifti(volume, tmp_path / "b.nii.gz", descrip="phantom seed 3 " + "x" * 200)
    raw = nib.load(custom).header["descrip"].item()
    assert raw.startswith(b"SYNTHETIC phantom seed 3") and len(raw) <= 80
    assert load_nifti(custom).meta["descrip"].startswith("SYNTHETIC")


def test_sidecar_round_trip(tmp_path):
    record = provenance(report="Solid nodule in the right upper lobe.", seed=7, density=np.float32(0.5),
                        shape=np.array([4, 5, 6]), report_zh="右肺上叶实性结节")
    path = save_nifti(hu_volume(np.eye(4)), tmp_path / "case.nii.gz", sidecar=record)
    assert sidecar_path(path) == tmp_path / "case.json"
    data = read_sidecar(path)
    assert data["synthetic"] is True and data["seed"] == 7 and data["density"] == 0.5
    assert data["shape"] == [4, 5, 6] and data["report_zh"] == "右肺上叶实性结节"
    assert data["medgen_version"] and data["created_utc"].endswith("+00:00")
    assert json.loads((tmp_path / "case.json").read_text(encoding="utf-8")) == data


def test_sidecar_paths_and_errors(tmp_path):
    assert sidecar_path("out/x.nii.gz").name == "x.json"
    assert sidecar_path("out/x.nii").name == "x.json"
    assert sidecar_path(tmp_path) == tmp_path / "provenance.json"
    assert provenance(synthetic=False)["synthetic"] is True
    write_sidecar(tmp_path, {"a": 1})
    assert read_sidecar(tmp_path) == {"a": 1}
    with pytest.raises(InputFileError, match="missing.json"):
        read_sidecar(tmp_path / "missing.nii.gz")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputFileError, match="bad.json"):
        read_sidecar(tmp_path / "bad.nii.gz")


def test_overwrite_false_refuses(tmp_path):
    path = save_nifti(hu_volume(np.eye(4)), tmp_path / "a.nii.gz")
    with pytest.raises(OutputExistsError):
        save_nifti(hu_volume(np.eye(4)), path, overwrite=False)
    with pytest.raises(ValueError, match="nii"):
        save_nifti(hu_volume(np.eye(4)), tmp_path / "a.png")


def test_bad_inputs_raise_input_file_error(tmp_path):
    good = save_nifti(hu_volume(make_affine(SHAPE, SPACING)), tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    truncated_raw = tmp_path / "truncated_raw.nii"
    raw = gzip.decompress(good.read_bytes())
    truncated_raw.write_bytes(raw[: len(raw) - 100])
    not_nifti = tmp_path / "notes.nii.gz"
    not_nifti.write_text("this is not an image")
    corrupt = tmp_path / "corrupt.nii"
    corrupt.write_bytes(b"\0" * 400)
    for bad in (tmp_path / "missing.nii.gz", truncated, truncated_raw, not_nifti, corrupt, tmp_path):
        with pytest.raises(InputFileError) as info:
            load_nifti(bad)
        assert bad.name in str(info.value)


def test_load_volume_dispatch(tmp_path):
    path = save_nifti(hu_volume(np.eye(4)), tmp_path / "a.nii")
    assert load_volume(path).shape == SHAPE
    other = tmp_path / "a.mha"
    other.write_bytes(b"x")
    for bad in (other, tmp_path / "missing.nii.gz"):
        with pytest.raises(InputFileError, match=bad.name):
            load_volume(bad)
