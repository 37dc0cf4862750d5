"""Layout stage: findings + anatomy -> label map + density map; anatomy bank; user layouts; dataset layouts."""

from __future__ import annotations

import numpy as np
import pytest

from medgen.errors import InputFileError
from medgen.findings import LABELS, Effusion, Emphysema, Findings, Lesion
from medgen.layout import CHANNELS, FIRST_LESION_LABEL, AnatomyBank, label_table, make_layout
from medgen.layout.labels import EMPHYSEMA_LABEL, batch_channels, density_map, layout_channels
from medgen.pipelines.layout_stage import findings_for, user_layout
from medgen.volume import make_affine

FINDINGS = Findings([Lesion("right_upper", 30.0, 0.9, "spiculated"), Lesion("left_lower", 20.0, 0.2)],
                    Effusion("left", "moderate"), Emphysema("moderate", True))


@pytest.fixture(scope="module")
def layout():
    return make_layout(FINDINGS, shape=48, spacing=7.0, seed=3)


def test_each_lesion_gets_its_label_and_density(layout):
    labels, density = np.asarray(layout.labels.array), np.asarray(layout.density.array)
    assert labels.dtype == np.uint8 and labels.shape == (48, 48, 48)
    np.testing.assert_allclose(layout.labels.affine, make_affine((48,) * 3, (7.0,) * 3))
    for i, lesion in enumerate(FINDINGS.lesions):
        mask = labels == FIRST_LESION_LABEL + i
        assert mask.sum() > 0
        assert np.allclose(density[mask], lesion.density)
    assert (labels == LABELS["effusion"]).sum() > 0 and (labels == EMPHYSEMA_LABEL).sum() > 0
    assert density[labels < FIRST_LESION_LABEL].max() == 0.0
    assert layout.label_table["lesion_2"] == FIRST_LESION_LABEL + 1
    assert all(c is not None for c in (les.center_mm for les in layout.findings.lesions))


def test_lesion_centres_lie_on_the_reported_side(layout):
    # RAS+: +x is the patient's right
    right, left = layout.findings.lesions
    assert right.center_mm[0] > 0 > left.center_mm[0]


def test_same_seed_same_layout_other_seed_other_layout(layout):
    again = make_layout(FINDINGS, shape=48, spacing=7.0, seed=3)
    other = make_layout(FINDINGS, shape=48, spacing=7.0, seed=4)
    assert np.array_equal(again.labels.array, layout.labels.array)
    assert not np.array_equal(other.labels.array, layout.labels.array)


def test_channels_are_one_hot_plus_density(layout):
    channels = layout.channels()
    assert channels.shape == (len(CHANNELS), 48, 48, 48)
    semantic = channels[:CHANNELS.index("emphysema")]  # emphysematous lung is also lung
    assert semantic.sum(0).max() <= 1.0
    emphysema = channels[CHANNELS.index("emphysema")] > 0
    assert (channels[CHANNELS.index("lung")][emphysema] == 1).all()
    lesion = channels[CHANNELS.index("lesion")] > 0
    assert np.allclose(channels[-1][lesion].max(), 0.9) and channels[-1][~lesion].max() == 0


def test_batch_channels_match_the_numpy_path(layout):
    import torch

    labels = torch.from_numpy(np.asarray(layout.labels.array))[None, None]
    out = batch_channels(labels, [FINDINGS.to_dict()])
    assert torch.allclose(out[0], torch.from_numpy(layout.channels()))


def test_anatomy_bank_retrieves_by_embedding_and_seed(tmp_path):
    from medgen.phantom.chest import anatomy_of_seed

    embeddings = np.eye(4, dtype=np.float32)
    bank = AnatomyBank(["a", "b", "c", "d"], [anatomy_of_seed(s) for s in range(4)], embeddings, k=1)
    anatomy, info = bank.retrieve(np.array([0, 0, 1.0, 0.1]), seed=9)
    assert info["subject"] == "c" and anatomy == anatomy_of_seed(2)
    bank.save_pretrained(tmp_path / "bank")
    loaded = AnatomyBank.from_pretrained(tmp_path / "bank")
    assert loaded.retrieve(np.array([0, 0, 1.0, 0.1]), seed=9)[1]["subject"] == "c"
    wide = AnatomyBank(["a", "b", "c", "d"], [anatomy_of_seed(s) for s in range(4)], embeddings, k=4)
    picks = {wide.retrieve(np.ones(4), seed=s)[1]["subject"] for s in range(20)}
    assert len(picks) > 1 and wide.retrieve(np.ones(4), seed=5) == wide.retrieve(np.ones(4), seed=5)
    with pytest.raises(InputFileError):
        AnatomyBank.from_pretrained(tmp_path / "nowhere")


def test_a_layout_on_a_bank_anatomy_differs_from_the_seed_anatomy():
    from medgen.phantom.chest import anatomy_of_seed

    a = make_layout(FINDINGS, shape=32, spacing=10.0, seed=1)
    b = make_layout(FINDINGS, shape=32, spacing=10.0, seed=1, anatomy=anatomy_of_seed(77),
                    anatomy_info={"source": "bank", "subject": "x"})
    assert b.anatomy["source"] == "bank" and not np.array_equal(a.labels.array, b.labels.array)


def test_user_layout_checks_grid_labels_and_lesions(layout):
    affine = layout.labels.affine
    ok = user_layout(layout.labels, FINDINGS, shape=(48, 48, 48), spacing=(7.0,) * 3, affine=affine)
    assert np.array_equal(ok.density.array, layout.density.array)
    with pytest.raises(InputFileError, match="not the output grid"):
        user_layout(layout.labels, FINDINGS, shape=(64, 64, 64), spacing=(5.0,) * 3, affine=make_affine(64, 5.0))
    from medgen.volume import Volume

    array = np.asarray(layout.labels.array).copy()
    array[0, 0, 0] = 15
    with pytest.raises(InputFileError, match="unknown label"):
        user_layout(Volume(array, affine), FINDINGS, shape=(48,) * 3, spacing=(7.0,) * 3, affine=affine)
    with pytest.raises(InputFileError, match="do not match"):
        user_layout(layout.labels, Findings(FINDINGS.lesions[:1]), shape=(48,) * 3, spacing=(7.0,) * 3, affine=affine)


def test_explicit_density_overrides_every_lesion():
    chosen = findings_for(None, FINDINGS, 0.4)
    assert [x.density for x in chosen.lesions] == [0.4, 0.4] and FINDINGS.lesions[0].density == 0.9


def test_density_map_and_label_table_limits():
    labels = np.array([[[0, 20, 21]]], dtype=np.uint8)
    np.testing.assert_allclose(density_map(labels, [0.1, 0.7]), [[[0.0, 0.1, 0.7]]], rtol=1e-6)
    assert layout_channels(labels, density_map(labels, [0.1, 0.7])).shape == (len(CHANNELS), 1, 1, 3)
    assert "lesion_1" not in label_table(0)
    with pytest.raises(ValueError):
        label_table(21)


def test_dataset_layouts_match_the_phantom_label_maps(tiny_manifest, tmp_path):
    import shutil

    from medgen.dataset.layouts import add_layouts
    from medgen.dataset.manifest import read_manifest

    root = tmp_path / "data"
    shutil.copytree(tiny_manifest.parent, root)
    manifest = add_layouts(root / tiny_manifest.name, shape=32, spacing=10.0, progress=False)
    rows = read_manifest(manifest)
    assert all(row["layout"].endswith(f"layouts/{row['id']}.nii.gz") for row in rows)
    import nibabel as nib

    for row in rows:
        layout = np.asarray(nib.load(row["layout"]).dataobj)
        label = np.asarray(nib.load(row["label"]).dataobj)
        assert ((layout >= FIRST_LESION_LABEL) == (label == LABELS["lesion"])).all()
        # a lesion of a few mm may cover no 10 mm voxel at all
        assert len({int(v) for v in np.unique(layout) if v >= FIRST_LESION_LABEL}) <= len(row["findings"]["lesions"])
