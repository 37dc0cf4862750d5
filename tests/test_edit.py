"""Editing an existing CT: masked denoising, anatomy and placement, exactness outside the margin on any grid,
composition (add, effusion, re-density, remove), the CLI and its refusals, and the edit metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.cli.main import main as cli_main
from medgen.edit import EditInputError, EditPipeline
from medgen.edit.anatomy import labels_anatomy, segment_anatomy
from medgen.edit.editor import feather, latent_mask
from medgen.edit.place import edit_layout
from medgen.evaluation.edit_metrics import outside_max_abs_diff, score_added_lesion, seam_ratio
from medgen.findings import LABELS, LOBE_LABELS, Findings, Lesion
from medgen.io import load_nifti, save_nifti
from medgen.phantom.anatomy import Grid
from medgen.phantom.chest import make_phantom
from medgen.volume import Volume

LESION = Lesion(lobe="right_lower", diameter_mm=40.0, density=0.9)


@pytest.fixture(scope="module")
def chest():
    """A phantom without findings at the tiny model's grid (32^3 at 10 mm) and its true labels."""
    case = make_phantom(Findings(), shape=32, spacing=10.0, seed=880_500)
    return Volume(np.asarray(case.image.array, np.float32), case.image.affine.copy()), np.asarray(case.labels.array)


@pytest.fixture(scope="module")
def layout_pipe(tiny_layout_model_dir):
    from medgen.pipelines import ReportToVolumePipeline

    return ReportToVolumePipeline.from_pretrained(tiny_layout_model_dir)


def _grid(volume: Volume) -> Grid:
    return Grid.from_affine(volume.shape, volume.affine)


# --- masked denoising --------------------------------------------------------------------------------------

def test_inpainting_keeps_the_known_latent_outside_the_mask_and_nothing_else_changes(tiny_pipeline_dir):
    from medgen.diffusion.guidance import Guidance
    from medgen.diffusion.sampler import Inpaint, sample_latents
    from medgen.pipelines import ReportToVolumePipeline

    pipe = ReportToVolumePipeline.from_pretrained(tiny_pipeline_dir)
    enc, null = pipe.encode_report(["A mass."])
    kwargs = dict(encoding=enc, null_encoding=null, density=None, latent_shape=(4, 8, 8, 8), num_inference_steps=3,
                  guidance=Guidance(text=2.0, density=1.0), progress=False)
    known = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 1, 8, 8, 8)
    mask[..., 2:5, 2:5, 2:5] = 1.0
    gen = torch.Generator().manual_seed(1)
    free = sample_latents(pipe.unet, pipe.scheduler, generator=torch.Generator().manual_seed(1), **kwargs)
    kept = sample_latents(pipe.unet, pipe.scheduler, generator=gen, inpaint=Inpaint(known, mask, gen), **kwargs)
    outside = mask.expand_as(known) == 0
    assert torch.equal(kept[outside], known[outside])  # the known region is exactly the given latent
    assert not torch.allclose(kept[~outside], known[~outside])
    everything = sample_latents(pipe.unet, pipe.scheduler, generator=torch.Generator().manual_seed(1),
                                inpaint=Inpaint(known, torch.ones(1, 1, 8, 8, 8), torch.Generator()), **kwargs)
    assert torch.equal(everything, free)  # mask 1 everywhere = plain sampling


def test_feather_and_latent_mask():
    changed = np.zeros((20, 20, 20), bool)
    changed[10, 10, 10] = True
    w = feather(changed, (5.0, 5.0, 5.0), 15.0)
    assert w[10, 10, 10] == 1.0 and w[11, 10, 10] == 1.0  # within margin / 2
    assert w[13, 10, 10] == 0.0 and w[0, 0, 0] == 0.0  # at and beyond the margin
    assert 0.0 < w[12, 10, 10] < 1.0
    assert w[10, 10, 10:].tolist() == sorted(w[10, 10, 10:].tolist(), reverse=True)
    mask = latent_mask(w, 4)
    assert mask.shape == (1, 1, 5, 5, 5) and mask[0, 0, 2, 2, 2] == 1 and mask[0, 0, 0, 0, 0] == 0
    assert feather(np.zeros((4, 4, 4), bool), (1, 1, 1), 5.0).max() == 0


# --- anatomy and placement ---------------------------------------------------------------------------------

def test_segmented_anatomy_finds_the_lobes_and_refuses_what_is_not_a_chest(chest):
    volume, truth = chest
    anatomy = segment_anatomy(np.asarray(volume.array), _grid(volume))
    for lobe, value in LOBE_LABELS.items():
        t, p = truth == value, anatomy.labels == value
        assert 2 * (t & p).sum() / (t.sum() + p.sum()) > 0.6, lobe
    water = np.zeros((32, 32, 32), np.float32)
    with pytest.raises(EditInputError, match="does not look like a chest CT"):
        segment_anatomy(water, _grid(volume))


def test_lesion_is_placed_in_its_lobe_and_too_large_or_missing_lobes_are_refused(chest):
    volume, _ = chest
    anatomy = segment_anatomy(np.asarray(volume.array), _grid(volume))
    edit = edit_layout(anatomy, Findings(), Findings(lesions=[LESION]), seed=3)
    lesion = edit.labels == 20
    assert lesion.any() and edit.changed[lesion].all()
    assert (anatomy.labels[lesion] == LOBE_LABELS["right_lower"]).mean() > 0.8  # it replaced right lower lobe
    assert (edit.density[lesion] == pytest.approx(0.9)) and edit.findings.lesions[0].center_mm is not None
    assert edit_layout(anatomy, Findings(), Findings(lesions=[LESION]), seed=3).labels.tobytes() == edit.labels.tobytes()
    with pytest.raises(EditInputError, match="larger than the right lower lobe"):
        edit_layout(anatomy, Findings(), Findings(lesions=[Lesion("right_lower", 150.0, 0.9)]))
    no_middle = labels_anatomy(np.where(anatomy.labels == LOBE_LABELS["right_middle"], 1, anatomy.labels),
                               anatomy.grid)
    with pytest.raises(EditInputError, match="no right middle lobe"):
        edit_layout(no_middle, Findings(), Findings(lesions=[Lesion("right_middle", 20.0, 0.9)]))
    with pytest.raises(EditInputError, match="needs the CT's label map"):
        edit_layout(anatomy, Findings(lesions=[LESION]), Findings(), remove=[1])
    with pytest.raises(EditInputError, match="lesion 2 is not in"):
        edit_layout(labels_anatomy(edit.labels, anatomy.grid), edit.findings, Findings(), remove=[2])


def test_effusion_fills_its_side_and_removal_renumbers_the_rest(chest):
    from medgen.findings import Effusion

    volume, _ = chest
    anatomy = segment_anatomy(np.asarray(volume.array), _grid(volume))
    two = Findings(lesions=[Lesion("right_upper", 25.0, 0.9), Lesion("left_upper", 30.0, 0.5)],
                   effusion=Effusion("right", "moderate"))
    edit = edit_layout(anatomy, Findings(), two, seed=1)
    fluid = (edit.labels == LABELS["effusion"]) & (anatomy.labels != LABELS["effusion"])
    assert fluid.any() and np.isin(anatomy.labels[fluid], [3, 4, 5]).all()  # only right lobes became fluid
    assert {20, 21} <= set(np.unique(edit.labels).tolist())
    removed = edit_layout(labels_anatomy(edit.labels, anatomy.grid), edit.findings, Findings(), remove=[1])
    assert 21 not in removed.labels and (removed.labels == 20).sum() == (edit.labels == 21).sum()
    assert [les.lobe for les in removed.findings.lesions] == ["left_upper"]
    assert removed.changed.sum() == (edit.labels == 20).sum()  # only the removed lesion changes
    assert np.isin(removed.labels[edit.labels == 20], list(LOBE_LABELS.values())).all()
    with pytest.raises(EditInputError, match="already has a right effusion"):
        edit_layout(labels_anatomy(edit.labels, anatomy.grid), edit.findings,
                    Findings(effusion=Effusion("bilateral", "small")))


# --- the whole edit ----------------------------------------------------------------------------------------

def test_edit_changes_only_the_margin_on_the_model_grid_and_on_another_grid(layout_pipe, chest):
    volume, _ = chest
    result = EditPipeline.from_pipe(layout_pipe)(volume, findings=Findings(lesions=[LESION]), seed=0, num_inference_steps=2,
                              progress=False)
    region = result.edit_region
    assert region.any() and region.mean() < 0.2
    assert outside_max_abs_diff(result.volume.array, volume.array, region) == 0.0
    assert not np.allclose(np.asarray(result.volume.array)[region], np.asarray(volume.array)[region])
    np.testing.assert_array_equal(result.volume.affine, volume.affine)
    labels = np.asarray(result.labels.array)
    assert labels.shape == volume.shape and (labels == 20).any() and labels.max() == 20
    record = result.provenance
    assert record["synthetic"] and record["edit"]["source"]["name"] == "array" and len(record["edit"]["source"]["sha256"]) == 64
    assert record["findings"]["lesions"][0]["lobe"] == "right_lower"
    # another input grid: 40 x 36 x 30 at 8 mm, shifted; work is done on the model grid, output on the input's
    case = make_phantom(Findings(), shape=(40, 36, 30), spacing=8.0, seed=880_501)
    other = Volume(np.asarray(case.image.array, np.float32), case.image.affine.copy())
    other.affine[:3, 3] += [4.0, -6.0, 3.0]
    result = EditPipeline.from_pipe(layout_pipe)(other, findings=Findings(lesions=[LESION]), seed=0, num_inference_steps=2,
                              progress=False)
    assert result.volume.shape == (40, 36, 30) and result.edit_region.any()
    assert outside_max_abs_diff(result.volume.array, other.array, result.edit_region) == 0.0
    np.testing.assert_array_equal(result.volume.affine, other.affine)


def test_edit_refuses_text_only_models_and_empty_edits(tiny_pipeline_dir, layout_pipe, chest):
    from medgen.pipelines import ReportToVolumePipeline

    volume, _ = chest
    with pytest.raises(ValueError, match="layout-grounded"):
        EditPipeline.from_pipe(ReportToVolumePipeline.from_pretrained(tiny_pipeline_dir))(volume, findings=Findings(lesions=[LESION]))
    with pytest.raises(ValueError, match="nothing to edit"):
        EditPipeline.from_pipe(layout_pipe)(volume, findings=Findings())
    with pytest.raises(ValueError, match="margin_mm"):
        EditPipeline.from_pipe(layout_pipe)(volume, findings=Findings(lesions=[LESION]), margin_mm=0)


def test_cli_edits_compose_and_bad_input_writes_nothing(tiny_layout_model_dir, chest, tmp_path, capsys):
    volume, _ = chest
    ct = save_nifti(volume, tmp_path / "ct.nii.gz")
    findings = tmp_path / "add.json"
    findings.write_text(Findings(lesions=[LESION]).to_json(), encoding="utf-8")
    common = ["--model", str(tiny_layout_model_dir), "--steps", "2", "--no-preview"]
    one = tmp_path / "one.nii.gz"
    assert cli_main(["edit", "--ct", str(ct), "--findings", str(findings), "--out", str(one), *common]) == 0
    sidecar = json.loads((tmp_path / "one.json").read_text())
    assert sidecar["edit"]["source"]["name"] == "ct.nii.gz" and len(sidecar["edit"]["source"]["sha256"]) == 64
    assert json.loads((tmp_path / "one_findings.json").read_text())["lesions"][0]["lobe"] == "right_lower"
    # the label map and findings beside one.nii.gz are picked up: change the density, then remove the lesion
    two = tmp_path / "two.nii.gz"
    assert cli_main(["edit", "--ct", str(one), "--set-density", "1=0.2", "--out", str(two), *common]) == 0
    assert json.loads((tmp_path / "two_findings.json").read_text())["lesions"][0]["density"] == 0.2
    three = tmp_path / "three.nii.gz"
    assert cli_main(["edit", "--ct", str(two), "--remove", "1", "--out", str(three), *common]) == 0
    assert 20 not in np.asarray(load_nifti(tmp_path / "three_labels.nii.gz").array)
    assert json.loads((tmp_path / "three_findings.json").read_text())["lesions"] == []
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    water = save_nifti(Volume(np.zeros((32, 32, 32), np.float32), volume.affine), tmp_path / "water.nii.gz")
    before.append("water.nii.gz")
    for argv in (["--ct", str(water), "--findings", str(findings)],  # not a chest
                 ["--ct", str(ct), "--report", "x", "--findings", str(findings)],  # two sources
                 ["--ct", str(tmp_path / "missing.nii.gz"), "--findings", str(findings)],
                 ["--ct", str(ct), "--set-density", "1=2"],
                 ["--ct", str(ct), "--remove", "1"]):  # no label map beside ct.nii.gz
        assert _exit_code(["edit", *argv, "--out", str(tmp_path / "bad.nii.gz"), *common]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("medgen: error:") and err.count("\n") == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def _exit_code(argv) -> int:
    """The CLI's exit status, whether it returns it or exits (argument errors exit from argparse)."""
    try:
        return cli_main(argv)
    except SystemExit as stop:
        return stop.code


def test_dicom_input_tags_are_not_copied(tiny_layout_model_dir, chest, tmp_path):
    import pydicom

    from medgen.io import write_dicom_series

    volume, _ = chest
    series = tmp_path / "series"
    for f in write_dicom_series(volume, series):
        ds = pydicom.dcmread(f)
        ds.PatientName, ds.PatientID = "Doe^Jane", "MRN-123456"
        ds.save_as(f)
    out = tmp_path / "edited.nii.gz"
    assert cli_main(["edit", "--ct", str(series), "--findings", str(_findings_file(tmp_path)), "--out", str(out),
                     "--model", str(tiny_layout_model_dir), "--steps", "1", "--no-preview",
                     "--dicom-out", str(tmp_path / "dicom")]) == 0
    text = (tmp_path / "edited.json").read_text() + "".join(
        str(pydicom.dcmread(f)) for f in sorted((tmp_path / "dicom").glob("*.dcm"))[:3])
    assert "Doe" not in text and "MRN-123456" not in text


def _findings_file(folder):
    path = folder / "add.json"
    path.write_text(Findings(lesions=[LESION]).to_json(), encoding="utf-8")
    return path


# --- metrics -----------------------------------------------------------------------------------------------

def test_edit_metrics_on_known_volumes():
    rng = np.random.default_rng(0)
    original = rng.normal(0, 10, (24, 24, 24))
    region = np.zeros(original.shape, bool)
    region[8:16, 8:16, 8:16] = True
    assert seam_ratio(original, original, region, (1, 1, 1)) == pytest.approx(1.0)
    stepped = original + np.where(region, 200.0, 0.0)
    assert seam_ratio(stepped, original, region, (1, 1, 1)) > 3.0
    assert seam_ratio(original, original, np.zeros_like(region), (1, 1, 1)) is None
    assert outside_max_abs_diff(stepped, original, region) == 0.0
    leaked = stepped.copy()
    leaked[0, 0, 0] += 7.0
    assert outside_max_abs_diff(leaked, original, region) == pytest.approx(7.0)
    from medgen.analysis.findings import MeasuredLesion

    asked = Lesion("left_upper", 30.0, 0.5, center_mm=(0.0, 0.0, 0.0))
    near = MeasuredLesion(side="left", zone="upper", lobe="left_upper", center_mm=(5.0, 0.0, 0.0),
                          diameter_mm=33.0, mean_hu=-310.0, core_hu=-300.0, volume_ml=10.0)
    far = MeasuredLesion(side="left", zone="upper", lobe="left_upper", center_mm=(40.0, 0.0, 0.0),
                         diameter_mm=30.0, mean_hu=-350.0, core_hu=-350.0, volume_ml=10.0)
    score = score_added_lesion([far, near], asked)
    assert score == {"found": True, "side": True, "lobe": True, "size_30": True, "hu_60": True, "hu_error": 40.0,
                     "size_ratio": 1.1}
    assert score_added_lesion([far], asked)["found"] is False
