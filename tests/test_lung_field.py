"""The normal lung field keeps vessels and texture but loses lesion-sized bright structure; findings are untouched."""

import numpy as np
import pytest

from medgen.findings import FIRST_LESION_LABEL, LABELS
from medgen.render.lung_field import DEFAULT_RADIUS_MM, ball, normal_lung_field, remove_unasked_structure

SPACING = (5.0, 5.0, 5.0)


def _lung(shape=(32, 32, 32)):
    labels = np.full(shape, LABELS["right_lower"], np.uint8)
    rng = np.random.default_rng(0)
    hu = (-850 + 15 * rng.standard_normal(shape)).astype(np.float32)
    return hu, labels


def _sphere(shape, centre, radius_vox):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius_vox ** 2


def test_a_lesion_sized_blob_is_taken_out_and_a_vessel_stays():
    hu, labels = _lung()
    blob = _sphere(hu.shape, (10, 10, 16), 2.6)  # 26 mm across, like the decoder's blobs
    hu[blob] = -700
    vessel = np.zeros(hu.shape, bool)
    vessel[22, 22, 4:28] = True  # one voxel wide, 12 cm long
    hu[vessel] = -600
    out = remove_unasked_structure(hu, labels, SPACING)
    assert out[blob].mean() < -820  # back to lung (was -700)
    assert np.array_equal(out[vessel], hu[vessel])  # narrower than the ball: kept as rendered
    far = ~(_sphere(hu.shape, (10, 10, 16), 5) | vessel)
    assert np.abs(out[far] - hu[far]).max() < 40  # texture elsewhere barely touched
    assert (out <= hu).all()  # only bright excess is removed


def test_findings_and_their_margin_are_left_as_rendered():
    hu, labels = _lung()
    lesion = _sphere(hu.shape, (16, 16, 16), 3)
    labels[lesion] = FIRST_LESION_LABEL
    hu[lesion] = 20
    out = remove_unasked_structure(hu, labels, SPACING)
    near = ~normal_lung_field(labels, SPACING)
    assert near[lesion].all() and near.sum() > lesion.sum()  # the margin reaches past the lesion
    assert np.array_equal(out[near], hu[near])


def test_ball_footprint_and_grid_mismatch():
    assert ball(7.5, SPACING).shape == (3, 3, 3) and ball(7.5, SPACING).sum() == 19  # centre, faces and edges
    with pytest.raises(ValueError, match="share a grid"):
        remove_unasked_structure(np.zeros((4, 4, 4)), np.zeros((4, 4, 5), np.uint8), SPACING)


def test_the_layout_pipeline_applies_the_constraint_when_configured(tiny_layout_model_dir, monkeypatch):
    import medgen.pipelines.text_to_volume as t2v
    from medgen.findings import Findings
    from medgen.pipelines import ReportToVolumePipeline

    pipe = ReportToVolumePipeline.from_pretrained(tiny_layout_model_dir)
    seen = []

    def spy(hu, labels, spacing, **kwargs):
        seen.append((hu.shape, labels.shape, tuple(spacing), kwargs["radius_mm"]))
        return hu - 1.0

    monkeypatch.setattr(t2v, "remove_unasked_structure", spy)
    pipe.config["lung_field_radius_mm"] = DEFAULT_RADIUS_MM
    on = pipe(findings=Findings(), seed=0, num_inference_steps=1, progress=False).volume.array
    assert len(seen) == 1 and seen[0][0] == seen[0][1] and seen[0][3] == DEFAULT_RADIUS_MM
    pipe.config["lung_field_radius_mm"] = None
    off = pipe(findings=Findings(), seed=0, num_inference_steps=1, progress=False).volume.array
    assert len(seen) == 1 and np.allclose(np.asarray(off) - 1.0, np.asarray(on), atol=1.0)
    pipe.config["lung_field"] = {"radius_mm": 5.0, "quantiles": [-950.0, -900.0, -500.0]}  # the default's form
    pipe(findings=Findings(), seed=0, num_inference_steps=1, progress=False)
    assert len(seen) == 2 and seen[1][3] == 5.0


def test_tolerance_keeps_a_gentle_gradient_and_dark_lifts_a_wide_dark_patch():
    _, labels = _lung()
    hu = np.full(labels.shape, -850.0, np.float32)  # noise-free, so the opening sees the rise exactly
    plateau = _sphere(hu.shape, (16, 16, 16), 4)
    hu[plateau] += 25  # a gravity-like rise, far below ground glass
    kept = remove_unasked_structure(hu, labels, SPACING, tolerance_hu=40.0)
    assert np.array_equal(kept, hu)
    cut = remove_unasked_structure(hu, labels, SPACING)
    assert np.allclose(cut[plateau], -850.0)  # with no tolerance it is flattened to the lobe median

    hu, labels = _lung()
    patch = _sphere(hu.shape, (16, 16, 16), 3)
    hu[patch] = -985  # an emphysema-like patch 60 mm across that no report asked for
    assert np.array_equal(remove_unasked_structure(hu, labels, SPACING)[patch], hu[patch])  # bright-only by default
    lifted = remove_unasked_structure(hu, labels, SPACING, dark=True)
    assert lifted[patch].mean() > -870 and (lifted[patch] >= hu[patch]).all()


def test_quantile_matching_gives_the_field_normal_lungs_histogram_and_keeps_its_order():
    from medgen.render.lung_field import match_distribution, reference_quantiles

    hu, labels = _lung()
    hu[_sphere(hu.shape, (16, 16, 16), 3)] -= 120  # a dark patch: LAA-950 far above normal
    reference = (-900 + 10 * np.random.default_rng(1).standard_normal(hu.shape)).astype(np.float32)
    quantiles = reference_quantiles([(reference, labels)], SPACING, n=101)
    assert len(quantiles) == 101 and quantiles == sorted(quantiles)
    out = remove_unasked_structure(hu, labels, SPACING, quantiles=quantiles)
    field = normal_lung_field(labels, SPACING)
    assert abs(np.median(out[field]) + 900) < 2 and abs(out[field].std() - 10) < 2
    assert (out[field] < -950).mean() < 0.001 < (hu[field] < -950).mean()
    values = np.array([3.0, -1.0, 2.0, 2.0])
    assert match_distribution(values, [0.0, 10.0]).argsort(kind="stable").tolist() == [1, 2, 3, 0]  # rank order kept
    with pytest.raises(ValueError, match="non-decreasing"):
        match_distribution(values, [1.0, 0.0])
