"""Downstream utility benchmark: metric values on hand-built masks, arm bookkeeping, bars, and the harness end to
end at tiny sizes (cache reuse and resumed runs). The outcome at tiny sizes means nothing and is not checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_layout_pipeline import layout_model_dir  # noqa: F401 (fixture)
from test_pipeline import single_thread  # noqa: F401 (autouse fixture)

from medgen.evaluation.utility import QUICK, Sample, arm_training_sets, run_utility
from medgen.evaluation.utility_metrics import (
    band_of,
    detection_counts,
    dice,
    equivalent_diameter_mm,
    f1_scores,
    score_volume,
    summarise_scores,
)
from medgen.evaluation.utility_report import aggregate_arms, utility_bars, utility_markdown


def test_dice_on_known_masks():
    a, b = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    a[:2, :2, :2] = True  # 8 voxels
    b[1:3, :2, :2] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0 and dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) is None


def test_detection_by_size_band_on_known_masks():
    ids = np.zeros((20, 20, 20), np.uint8)
    ids[2:4, 2:4, 2:4] = 1  # true lesion 1: 10 mm (band 8-15)
    ids[10:14, 10:14, 10:14] = 2  # true lesion 2: 20 mm (band 15-30), missed below
    pred = np.zeros(ids.shape, bool)
    pred[3:5, 3:5, 3:5] = True  # overlaps lesion 1
    pred[0:8, 12:20, 0:8] = True  # a false positive of 512 voxels of 8 mm^3: 19.9 mm equivalent
    counts = detection_counts(pred, ids, {1: 10.0, 2: 20.0}, (2.0, 2.0, 2.0))
    assert equivalent_diameter_mm(512, (2.0,) * 3) == pytest.approx(2 * (3 * 4096 / (4 * np.pi)) ** (1 / 3))
    assert counts["8-15mm"] == {"tp": 1, "fn": 0, "fp": 0}
    assert counts["15-30mm"] == {"tp": 0, "fn": 1, "fp": 1}
    assert counts[">30mm"] == {"tp": 0, "fn": 0, "fp": 0}
    scores = f1_scores(counts)
    assert scores["8-15mm"]["f1"] == 1.0 and scores["15-30mm"]["f1"] == 0.0 and scores[">30mm"]["f1"] is None
    assert scores["15-30mm"]["precision"] == 0.0 and scores["15-30mm"]["recall"] == 0.0
    assert band_of(7.9) is None and band_of(15.0) == "15-30mm" and band_of(31) == ">30mm"


def test_volume_scores_and_their_summary():
    truth = np.zeros((6, 6, 6), np.uint8)
    truth[:2, :2, :2] = 1
    truth[4:, 4:, 4:] = 2
    ids = (truth == 1).astype(np.uint8)
    perfect = score_volume(truth, truth, ids, {1: 10.0}, (5.0,) * 3)
    assert perfect["lesion_dice"] == 1.0 and perfect["effusion_dice"] == 1.0
    empty = score_volume(np.zeros_like(truth), truth, ids, {1: 10.0}, (5.0,) * 3)
    assert empty["lesion_dice"] == 0.0 and empty["detection"]["8-15mm"]["fn"] == 1
    normal = score_volume(np.zeros_like(truth), np.zeros_like(truth), np.zeros_like(ids), {}, (5.0,) * 3)
    summary = summarise_scores([perfect, empty, normal])
    assert summary["lesion_dice"] == pytest.approx(0.5)  # the normal volume has no lesion to score
    assert summary["detection"]["8-15mm"]["recall"] == pytest.approx(0.5)


def test_arms_share_one_code_path_and_bars_follow_the_rule():
    real = [Sample(np.zeros((2, 2, 2), np.int16), np.zeros((2, 2, 2), np.uint8)) for _ in range(2)]
    gen = [Sample(np.ones((2, 2, 2), np.int16), np.zeros((2, 2, 2), np.uint8)) for _ in range(8)]
    abl = [Sample(np.full((2, 2, 2), 2, np.int16), np.zeros((2, 2, 2), np.uint8)) for _ in range(8)]
    sets = arm_training_sets(real, gen, abl)
    assert {k: len(v) for k, v in sets.items()} == {"a": 2, "b": 10, "c": 8, "d": 10}
    assert sets["b"][:2] == real and sets["d"][2:] == abl

    def run(dice_value, f1):
        return {"lesion_dice": dice_value, "effusion_dice": 0.5,
                "detection": {"8-15mm": {"f1": f1}, "15-30mm": {"f1": 0.5}, ">30mm": {"f1": None}}}

    runs = {("a", 0): run(0.50, 0.2), ("a", 1): run(0.52, 0.3), ("b", 0): run(0.56, 0.4), ("b", 1): run(0.57, 0.45),
            ("c", 0): run(0.40, 0.1), ("c", 1): run(0.41, 0.1)}
    arms = aggregate_arms(runs, seeds=(0, 1))
    assert arms["b"]["lesion_dice_minus_a"]["mean"] == pytest.approx(0.055)
    assert arms["b"]["lesion_dice_minus_a"]["spread"] == pytest.approx(np.std([0.06, 0.05], ddof=1))
    assert arms["a"]["f1_>30mm"]["mean"] is None
    bars = utility_bars(arms)
    assert bars["b_minus_a_dice_points"]["pass"] and bars["b_minus_a_dice_points"]["value"] == pytest.approx(5.5)
    assert bars["b_minus_a_f1_8_15mm"]["pass"]
    assert bars["c_over_a_dice"]["value"] == pytest.approx(0.405 / 0.51) and bars["c_over_a_dice"]["pass"] is False


def test_quick_harness_end_to_end_resumes_and_reuses_its_cache(layout_model_dir, tiny_pipeline_dir, tmp_path):  # noqa: F811
    from medgen.pipelines import ReportToVolumePipeline

    layout = ReportToVolumePipeline.from_pretrained(layout_model_dir)
    ablation = ReportToVolumePipeline.from_pretrained(tiny_pipeline_dir)
    layout.config.update(num_inference_steps=1)
    ablation.config.update(num_inference_steps=1)
    kwargs = dict(layout_pipe=layout, ablation_pipe=ablation, settings=QUICK, cache_dir=tmp_path / "cache",
                  progress=False)
    results = run_utility(tmp_path / "out", **kwargs)
    assert set(results["arms"]) == {"a", "b", "c", "d"}
    assert results["newly_generated"] == {"layout": 2, "ablation": 2}
    runs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").iterdir()}
    assert {name: r["n_train"] for name, r in runs.items()} == {"a-seed0.json": 2, "b-seed0.json": 4,
                                                                "c-seed0.json": 2, "d-seed0.json": 4}
    assert all(r["n_volumes"] == 2 for r in runs.values())
    again = run_utility(tmp_path / "out", **kwargs)  # nothing regenerated, nothing retrained
    assert again["newly_generated"] == {"layout": 0, "ablation": 0}
    assert again["arms"] == results["arms"]
    assert "| b | N real + 4N layout-grounded |" in utility_markdown(again, "medgen evaluate --utility --quick")
    with pytest.raises(ValueError, match="layout-grounded"):
        run_utility(tmp_path / "x", layout_pipe=ablation, ablation_pipe=ablation, settings=QUICK, progress=False)


def test_without_an_ablation_arm_d_is_left_out_and_real_phantoms_follow_the_model(layout_model_dir, tmp_path):  # noqa: F811
    import dataclasses

    from medgen.evaluation.utility import real_sample
    from medgen.pipelines import ReportToVolumePipeline

    layout = ReportToVolumePipeline.from_pretrained(layout_model_dir)
    layout.config.update(num_inference_steps=1)
    results = run_utility(tmp_path / "out", layout_pipe=layout, settings=QUICK, cache_dir=tmp_path / "cache",
                          progress=False)
    assert set(results["arms"]) == {"a", "b", "c"} and results["labelled_fraction_ablation"] is None
    assert results["newly_generated"] == {"layout": 2}
    assert "Arm d" not in utility_markdown(results, "medgen evaluate --utility --quick")
    v1 = real_sample(QUICK.test_seed, QUICK)
    v2 = real_sample(QUICK.test_seed, dataclasses.replace(QUICK, phantom_version=2))
    assert v1.hu.shape == v2.hu.shape and not np.array_equal(v1.hu, v2.hu)
