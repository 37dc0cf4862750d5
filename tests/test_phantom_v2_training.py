"""Training on phantom v2: the dataset builder, the exact layouts, the anatomy bank, fine-tuning from saved weights,
and evaluation drawing its reference subjects from the model's own phantom."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.findings import EMPHYSEMA_LABEL, FIRST_LESION_LABEL, LABELS, Findings, Lesion

SHAPE, SPACING = 32, 10.0


def _lesion(lobe="right_lower", mm=30.0):
    return Lesion(lobe=lobe, diameter_mm=mm, density=0.7)


def test_v2_dataset_rows_carry_their_exact_layout(tmp_path):
    from medgen.dataset.builder import build_synthetic_dataset
    from medgen.dataset.manifest import read_manifest

    manifest = build_synthetic_dataset(tmp_path / "d", n=3, shape=SHAPE, spacing=SPACING, seed=4, workers=1,
                                       progress=False, phantom_version=2)
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["phantom_version"] == 2
    for row in read_manifest(manifest):
        assert row["phantom_version"] == 2
        layout = np.asarray(nib.load(row["layout"]).dataobj)
        label = np.asarray(nib.load(row["label"]).dataobj)
        n = len(row["findings"]["lesions"])
        lesion_values = sorted(int(v) for v in np.unique(layout) if v >= FIRST_LESION_LABEL)
        assert set(lesion_values) <= {FIRST_LESION_LABEL + i for i in range(n)}
        # the label map is the layout with every lesion one label: the same voxels, in medgen's coarse table
        assert np.array_equal(label == LABELS["lesion"], layout >= FIRST_LESION_LABEL)
        assert set(np.unique(label).tolist()) <= {*LABELS.values(), EMPHYSEMA_LABEL}
        if row["findings"]["effusion"] is not None:
            assert (layout == LABELS["effusion"]).any()


def test_phantom_version_is_checked():
    from medgen.dataset.builder import build_synthetic_dataset
    from medgen.phantom.versions import make_case

    with pytest.raises(ValueError, match="phantom_version"):
        build_synthetic_dataset("/nonexistent/never", n=1, phantom_version=3)
    with pytest.raises(ValueError, match="phantom version"):
        make_case(Findings(), shape=SHAPE, spacing=SPACING, version=0)


def test_a_v2_anatomy_lays_findings_out_in_their_lobe_deterministically():
    from medgen.layout import make_layout

    findings = Findings(lesions=[_lesion()])
    anatomy = {"phantom_version": 2, "seed": 11}
    a = make_layout(findings, shape=SHAPE, spacing=SPACING, seed=0, anatomy=anatomy)
    b = make_layout(findings, shape=SHAPE, spacing=SPACING, seed=99, anatomy=anatomy)  # the v2 seed decides
    assert np.array_equal(a.labels.array, b.labels.array)
    lesion = np.asarray(a.labels.array) == FIRST_LESION_LABEL
    assert lesion.any() and np.allclose(a.density.array[lesion], 0.7)
    # the lesion sits in the right lower lobe: the lobe label fills its surroundings
    ring = np.zeros_like(lesion)
    idx = np.argwhere(lesion)
    lo, hi = idx.min(0), idx.max(0) + 1
    ring[tuple(slice(max(0, a - 1), b + 1) for a, b in zip(lo, hi, strict=True))] = True
    around = np.asarray(a.labels.array)[ring & ~lesion]
    lobes = [v for v in around if v in (3, 4, 5, 6, 7)]
    assert lobes and np.bincount(lobes).argmax() == LABELS["right_lower"]
    assert a.findings.lesions[0].center_mm is not None and findings.lesions[0].center_mm is None


def test_the_anatomy_bank_keeps_v2_subject_seeds():
    from medgen.layout import AnatomyBank

    class Encoder:
        def __call__(self, texts):
            class Out:
                pooled = torch.ones(len(texts), 4)
            return Out()

    rows = [{"id": "a", "report": "x", "seed": 5, "phantom_version": 2}, {"id": "b", "report": "y", "seed": 6}]
    bank = AnatomyBank.from_manifest_rows(rows, Encoder(), k=1)
    assert bank.anatomies[0] == {"phantom_version": 2, "seed": 5}
    assert "phantom_version" not in bank.anatomies[1]  # a v1 row keeps v1's anatomy parameters


def test_make_case_v2_is_a_phantom_case_in_the_coarse_table():
    from medgen.phantom.chest import PhantomCase
    from medgen.phantom.versions import make_case

    case = make_case(Findings(lesions=[_lesion()]), shape=SHAPE, spacing=SPACING, seed=3, version=2)
    assert isinstance(case, PhantomCase) and case.v2.ct is case.image
    labels = np.asarray(case.labels.array)
    assert np.array_equal(labels == LABELS["lesion"], case.lesion_ids > 0)
    assert json.dumps(case.subject)  # JSON-able, like v1's


def test_init_from_pretrained_loads_every_weight_or_fails(tmp_path):
    from safetensors.torch import save_file

    from medgen.engine.common import init_from_pretrained
    from medgen.errors import InputFileError

    src = torch.nn.Linear(3, 2)
    (tmp_path / "m").mkdir()
    save_file({f"unet.{k}": v.half() for k, v in src.state_dict().items()}, str(tmp_path / "m" / "model.safetensors"))
    dst = torch.nn.Linear(3, 2)
    init_from_pretrained(dst, tmp_path / "m", prefix="unet.")
    assert torch.allclose(dst.weight, src.weight.half().float())
    with pytest.raises(InputFileError, match="do not fit"):
        init_from_pretrained(torch.nn.Linear(4, 2), tmp_path / "m", prefix="unet.")
    with pytest.raises(InputFileError, match="no model.safetensors"):
        init_from_pretrained(dst, tmp_path)


def test_evaluation_cases_follow_the_models_phantom():
    from medgen.evaluation.fidelity import PipelineGenerator, make_heldout_cases  # noqa: F401
    from medgen.evaluation.fidelity import make_heldout_cases as cases_of

    v1 = cases_of(2, shape=SHAPE, spacing=SPACING, seed=3)
    v2 = cases_of(2, shape=SHAPE, spacing=SPACING, seed=3, phantom_version=2)
    assert [c.report for c in v1] == [c.report for c in v2]  # same findings and reports, other subjects
    assert v2[0].phantom_version == 2 and v2[0].real.meta.get("phantom_version") == 2
    assert not np.array_equal(v1[0].real.array, v2[0].real.array)


def test_the_pipeline_config_records_the_phantom_version():
    from medgen.pipelines.build import make_pipeline_config

    experiment = {"autoencoder": {"spatial_dims": 3}, "data": {"shape": [32] * 3, "spacing": [10.0] * 3}}
    assert make_pipeline_config(experiment)["phantom_version"] == 1
    experiment["data"]["phantom_version"] = 2
    assert make_pipeline_config(experiment)["phantom_version"] == 2


def test_data_layouts_remakes_a_v2_sets_layouts_exactly(tmp_path):
    """`medgen data layouts` on a v2 set re-makes each row's layout from its v2 subject (not a v1 anatomy)."""
    from medgen.dataset.builder import build_synthetic_dataset
    from medgen.dataset.layouts import add_layouts
    from medgen.dataset.manifest import read_manifest

    manifest = build_synthetic_dataset(tmp_path / "d", n=2, shape=SHAPE, spacing=SPACING, seed=9, workers=1,
                                       progress=False, phantom_version=2)
    built = {r["id"]: np.asarray(nib.load(r["layout"]).dataobj) for r in read_manifest(manifest)}
    for row in read_manifest(add_layouts(manifest, shape=SHAPE, spacing=SPACING, progress=False)):
        assert np.array_equal(np.asarray(nib.load(row["layout"]).dataobj), built[row["id"]])
