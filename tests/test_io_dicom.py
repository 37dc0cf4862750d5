"""DICOM series write/read: HU and geometry survive, slices sort by position, bad series are refused."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medgen.errors import InputFileError, OutputExistsError
from medgen.io import load_volume, read_dicom_series, write_dicom_series
from medgen.io.dicom import LPS
from medgen.io.nifti import reorient
from medgen.volume import Volume, make_affine

SHAPE = (12, 10, 7)
SPACING = (0.8, 0.7, 2.5)
ORIGIN = (-20.0, 35.5, -110.0)
MARKER = (10, 8, 5)  # high i: patient's right; high j: anterior; high k: superior
MARKER_HU = 3000


def ct_volume(seed: int = 0, affine=None) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 1500, SHAPE).astype(np.float32)
    array[MARKER] = MARKER_HU
    return Volume(array, make_affine(SHAPE, SPACING, ORIGIN) if affine is None else affine)


@pytest.fixture
def series(tmp_path):
    volume = ct_volume()
    files = write_dicom_series(volume, tmp_path / "series", provenance={"seed": 0, "report": "Nodule."})
    return volume, tmp_path / "series", files


def test_round_trip_identical_hu_and_affine(series):
    volume, folder, files = series
    assert [f.name for f in files] == [f"slice_{k:04d}.dcm" for k in range(1, SHAPE[2] + 1)]
    loaded = read_dicom_series(folder)
    assert loaded.array.dtype == np.float32
    assert loaded.orientation == "RAS"
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(load_volume(folder).array, volume.array)
    assert read_dicom_series(files).shape == SHAPE


def test_non_ras_and_oblique_input_keep_world_positions(tmp_path):
    theta = np.deg2rad(10.0)
    rotation = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]])
    affine = LPS @ make_affine(SHAPE, SPACING, ORIGIN)  # voxel axes toward L, P, S
    affine[:3, :3] = rotation @ affine[:3, :3]
    volume = ct_volume(affine=affine)
    loaded = read_dicom_series(write_dicom_series(volume, tmp_path / "s"))
    expected = reorient(volume, "RAS")
    np.testing.assert_array_equal(loaded.array, expected.array)
    np.testing.assert_allclose(loaded.affine, expected.affine, atol=1e-4)


def test_shuffled_files_without_instance_number(series, tmp_path):
    volume, folder, files = series
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    order = list(range(len(files)))
    random.Random(3).shuffle(order)
    names = iter(["b.dcm", "zz", "a01", "IM9", "c.dcm", "0007", "m"])
    for k in order:
        ds = pydicom.dcmread(files[k])
        del ds.InstanceNumber
        ds.save_as(shuffled / next(names))
    loaded = read_dicom_series(shuffled)
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=1e-4)


def test_marker_lands_on_the_patients_right_in_lps(tmp_path):
    volume = ct_volume(affine=make_affine(SHAPE, SPACING))  # centred on the world origin
    files = write_dicom_series(volume, tmp_path / "centred")
    marker_ras = volume.world_coordinates(MARKER)
    assert marker_ras[0] > 0 and marker_ras[1] > 0  # patient's right, anterior
    hits = []
    for f in files:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for r, c in np.argwhere(hu == MARKER_HU):
            iop = np.asarray(ds.ImageOrientationPatient, float)
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
            lps = np.asarray(ds.ImagePositionPatient, float) + c * col_mm * iop[:3] + r * row_mm * iop[3:]
            hits.append((lps, r, c, ds.Rows, ds.Columns))
    assert len(hits) == 1
    lps, r, c, rows, cols = hits[0]
    assert lps[0] < 0 and lps[1] < 0 and lps[2] > 0  # LPS: patient's right and anterior are negative
    np.testing.assert_allclose(lps, [-marker_ras[0], -marker_ras[1], marker_ras[2]], atol=1e-4)
    assert c < cols / 2 and r < rows / 2  # displayed as stored: right on the image's left, anterior up


def test_geometry_tags(series):
    volume, _, files = series
    first, second = pydicom.dcmread(files[0]), pydicom.dcmread(files[1])
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in first.PixelSpacing] == pytest.approx([SPACING[1], SPACING[0]])  # row \ column
    assert (first.Rows, first.Columns) == (SHAPE[1], SHAPE[0])
    assert float(first.SliceThickness) == float(first.SpacingBetweenSlices) == pytest.approx(SPACING[2])
    lps_affine = LPS @ reorient(volume, "LPS").affine
    for k, ds in ((0, first), (1, second)):
        expected = (lps_affine @ [0, 0, k, 1])[:3]
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-5)
    assert float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2]) == pytest.approx(SPACING[2])


def test_identity_tags_and_fresh_uids(series, tmp_path):
    volume, folder, files = series
    volume.meta.update(PatientName="DOE^JANE", PatientID="MRN-4711")
    again = write_dicom_series(volume, tmp_path / "again")
    datasets = [pydicom.dcmread(f) for f in files]
    ds = datasets[0]
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" == ds.file_meta.MediaStorageSOPClassUID
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert (str(ds.PatientName), ds.PatientID, ds.Modality) == ("SYNTHETIC^MEDGEN", "SYNTHETIC", "CT")
    assert ds.BurnedInAnnotation == "NO" and ds.SeriesDescription == "medgen synthetic CT"
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert "SYNTHETIC" in ds.ImageComments and '"seed": 0' in ds.ImageComments
    assert [int(d.InstanceNumber) for d in datasets] == list(range(1, SHAPE[2] + 1))
    sops = [d.SOPInstanceUID for d in datasets]
    assert len(set(sops)) == len(sops)
    assert all(d.SOPInstanceUID == d.file_meta.MediaStorageSOPInstanceUID for d in datasets)
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    other = pydicom.dcmread(again[0])
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        assert getattr(other, keyword) != getattr(ds, keyword), keyword
    # no identity anywhere but the pixel data (whose random bytes may spell anything): every element's value
    header = pydicom.dcmread(again[0])
    del header.PixelData
    text = str(header) + str(header.file_meta)
    assert "DOE" not in text and "4711" not in text
    assert (folder / "provenance.json").is_file()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_overwrite(series):
    volume, folder, _ = series
    with pytest.raises(OutputExistsError):
        write_dicom_series(volume, folder)
    assert len(write_dicom_series(volume, folder, overwrite=True)) == SHAPE[2]


def test_simpleitk_series_reader_agrees(series):
    sitk = pytest.importorskip("SimpleITK")
    _, folder, _ = series
    ours = read_dicom_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps_affine = np.eye(4)
    lps_affine[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    lps_affine[:3, 3] = image.GetOrigin()
    theirs = reorient(Volume(sitk.GetArrayFromImage(image).transpose(2, 1, 0), LPS @ lps_affine), "RAS")
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-4)
    np.testing.assert_array_equal(theirs.array, ours.array)


def test_reads_pydicom_ct_small():
    path = get_testdata_file("CT_small.dcm")
    volume = read_dicom_series(path)
    ds = pydicom.dcmread(path)
    assert volume.shape == (ds.Columns, ds.Rows, 1)
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 5.0))  # slice step: SpacingBetweenSlices
    assert volume.meta["slice_spacing_source"] == "SpacingBetweenSlices"
    expected = ds.pixel_array.T.astype(np.float32) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.array[::-1, ::-1, 0], expected)  # LPS pixel order -> RAS
    ipp = np.asarray(ds.ImagePositionPatient, float)
    np.testing.assert_allclose(volume.world_coordinates((127, 127, 0)), [-ipp[0], -ipp[1], ipp[2]], atol=1e-4)


def edit(folder, name, change):
    ds = pydicom.dcmread(folder / name)
    change(ds)
    ds.save_as(folder / name)


def shift_position(ds, mm):
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + mm]


def smaller_image(ds):
    ds.set_pixel_data(np.zeros((4, 5), np.uint16), "MONOCHROME2", 16, generate_instance_uid=False)


def duplicate(folder, name):
    ds = pydicom.dcmread(folder / "slice_0004.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / name)


def truncate(folder, name):
    path = folder / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_SERIES = {
    "not-dicom": lambda f, n: (f / n).write_text("not a DICOM file"),
    "truncated": truncate,
    "truncated-pixels": lambda f, n: (f / n).write_bytes((f / n).read_bytes()[:-10]),
    "mixed-series": lambda f, n: edit(f, n, lambda ds: setattr(ds, "SeriesInstanceUID", pydicom.uid.generate_uid())),
    "mixed-orientation": lambda f, n: edit(f, n, lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1])),
    "non-uniform-spacing": lambda f, n: edit(f, n, lambda ds: shift_position(ds, 1.0)),
    "mixed-size": lambda f, n: edit(f, n, smaller_image),
    "duplicate-position": duplicate,
}


@pytest.mark.parametrize("problem", sorted(BAD_SERIES))
def test_bad_series_name_the_file(series, tmp_path, problem):
    _, folder, _ = series
    bad = tmp_path / problem
    shutil.copytree(folder, bad)
    name = "extra_slice.dcm" if problem == "duplicate-position" else "slice_0004.dcm"
    BAD_SERIES[problem](bad, name)
    with pytest.raises(InputFileError) as info:
        read_dicom_series(bad)
    assert name in str(info.value), str(info.value)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(InputFileError, match="nowhere"):
        read_dicom_series(tmp_path / "nowhere")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "provenance.json").write_text("{}")
    with pytest.raises(InputFileError, match="empty_folder"):
        read_dicom_series(empty)
    with pytest.raises(InputFileError, match="gone.dcm"):
        read_dicom_series([tmp_path / "gone.dcm"])
