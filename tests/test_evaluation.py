"""medgen.evaluation: the quick end-to-end run (every section from real outputs), oracle ceilings of the
fidelity and calibration scorers, and the building blocks (retrieval, MS-SSIM, MMD, aggregation, JSON)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from medgen.evaluation import alignment as align
from medgen.evaluation import realism as rea
from medgen.evaluation.calibration import score_calibration, select_calibration_cases
from medgen.evaluation.fidelity import PhantomOracle, aggregate_records, make_heldout_cases, score_fidelity
from medgen.evaluation.report import jsonable
from medgen.volume import Volume, make_affine

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _numbers(value, path=""):
    """Every (path, number) leaf of a JSON tree."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


# ------------------------------------------------------------------------------------- quick run


@pytest.fixture(scope="module")
def quick(tiny_pipeline_dir, tmp_path_factory):
    from medgen.evaluation import run_evaluation

    out = tmp_path_factory.mktemp("evaluation") / "tiny"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        results = run_evaluation(tiny_pipeline_dir, out, quick=True, progress=True)
    return results, out, json.loads((out / "results.json").read_text()), stderr.getvalue()


def test_quick_run_writes_every_section(quick):
    results, out, saved, _ = quick
    assert set(saved) >= {"fidelity", "calibration", "realism", "alignment", "speed", "bars", "meta"}
    for name in ("summary.md", "results.json", "fidelity.png", "calibration.png", "diversity.png", "speed.png",
                 "alignment_model/model.safetensors", "alignment_model/config.json"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
    summary = (out / "summary.md").read_text()
    for heading in ("Report fidelity", "Density calibration", "Realism", "alignment", "Speed"):
        assert heading in summary
    assert all(math.isfinite(v) for _, v in _numbers(saved))


def test_quick_run_counts_match_the_request(quick):
    results, _, saved, _ = quick
    fid, cal = saved["fidelity"], saved["calibration"]
    assert fid["n_reports"] == 4 and fid["n_seeds"] == 2 and fid["n_generated"] == 8
    assert len(fid["records"]) == 8 and fid["languages"] == {"en": 2, "zh": 2}
    assert cal["n_generated"] == cal["n_reports"] * 5 * cal["n_seeds"] == len(cal["points"])
    assert saved["meta"]["n_generated_total"] == fid["n_generated"] + cal["n_generated"]
    assert fid["overall"], "no attribute was scored"
    for stat in fid["overall"].values():
        assert 1 <= stat["n"] <= 8 and math.isfinite(stat["mean"])


def test_quick_run_figures_are_in_range(quick):
    _, _, saved, _ = quick
    for name, r in saved["alignment"]["retrieval"].items():
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0, name
        assert 1.0 <= r["mean_rank"] <= r["n_candidates"] == 4
    div = saved["realism"]["diversity"]
    for key in ("generated_same_report", "real_same_findings", "real_different_subjects"):
        assert 0.0 <= div[key]["mean"] <= 1.0 and div[key]["n_pairs"] >= 1
    # different subjects with the same findings are similar but not identical volumes
    assert 0.3 < div["real_same_findings"]["mean"] < 0.999
    for feats in saved["realism"]["features"].values():
        assert feats["frechet"] >= 0.0 and feats["n_real"] == feats["n_generated"] == 4
    side = saved["speed"]["shapes"]["32"]
    for ratio in side["ratio_vs_monai"].values():
        assert ratio > 0
    for run in ("guided", "text_guided", "unguided"):
        assert side[run]["denoise_s"] > 0 and side[run]["decode_s"] > 0 and side[run]["write_s"] > 0
        assert side[run]["total_s"] == pytest.approx(sum(side[run][f"{s}_s"] for s in
                                                          ("encode_text", "denoise", "decode", "write")))
    assert side["monai_stock"]["denoise_decode_s"] > 0


def test_quick_run_calibration_points_come_from_real_generations(quick, tiny_pipeline_dir):
    """Regenerating one calibration volume with the recorded seed and density gives the recorded lesion HU."""
    from medgen.analysis import analyze_volume
    from medgen.evaluation.calibration import largest_lesion_hu
    from medgen.pipelines import ReportToVolumePipeline

    _, _, saved, _ = quick
    point = saved["calibration"]["points"][3]
    settings = saved["meta"]["settings"]
    cases = make_heldout_cases(settings["n_reports"], shape=(32,) * 3, spacing=(10.0,) * 3,
                               seed=settings["case_seed"])
    case = next(c for c in cases if c.index == point["case"])
    pipe = ReportToVolumePipeline.from_pretrained(tiny_pipeline_dir)
    volumes = pipe([case.report] * 5, density=list(saved["calibration"]["densities"]), seed=point["seed"],
                   num_inference_steps=2, progress=False)
    measured = largest_lesion_hu(analyze_volume(volumes[3].volume))
    assert point["d"] == 0.75
    assert (measured is None and point["measured_hu"] is None) or measured == pytest.approx(point["measured_hu"])


def test_quick_run_diversity_comes_from_real_generations(quick, tiny_pipeline_dir):
    """Regenerating the 4 reports x 2 seeds (same batches and seeds) reproduces the recorded MS-SSIM and records."""
    from medgen.analysis import analyze_volume, compare_findings
    from medgen.evaluation.fidelity import attribute_record, without_centres
    from medgen.pipelines import ReportToVolumePipeline

    _, _, saved, _ = quick
    settings = saved["meta"]["settings"]
    cases = make_heldout_cases(4, shape=(32,) * 3, spacing=(10.0,) * 3, seed=settings["case_seed"])
    pipe = ReportToVolumePipeline.from_pretrained(tiny_pipeline_dir)
    volumes = {s: [r.volume for r in pipe([c.report for c in cases], seed=1000 * s, num_inference_steps=2,
                                          progress=False)] for s in settings["seeds"]}
    expected = np.mean([rea.ms_ssim(volumes[0][i], volumes[1][i]) for i in range(4)])
    assert saved["realism"]["diversity"]["generated_same_report"]["mean"] == pytest.approx(expected, rel=1e-5)
    truth = without_centres(cases[2].findings)
    record = attribute_record(compare_findings(truth, analyze_volume(volumes[1][2])), truth)
    saved_record = next(r for r in saved["fidelity"]["records"] if r["case"] == 2 and r["seed"] == 1)
    assert jsonable(record) == {k: v for k, v in saved_record.items() if k not in ("case", "seed", "language")}


def test_saved_alignment_model_reloads(quick):
    _, out, _, _ = quick
    model = align.AlignmentModel.from_pretrained(out / "alignment_model")
    vol = make_heldout_cases(1, shape=(32,) * 3, spacing=(10.0,) * 3)[0].real
    emb = model.embed_images([vol, vol])
    assert emb.shape == (2, model.config["embed_dim"])
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_existing_results_are_not_overwritten(quick, tiny_pipeline_dir):
    from medgen.errors import OutputExistsError
    from medgen.evaluation import run_evaluation

    _, out, _, _ = quick
    with pytest.raises(OutputExistsError):
        run_evaluation(tiny_pipeline_dir, out, quick=True)


def test_cli_rejects_bad_arguments(tiny_pipeline_dir, tmp_path, capsys):
    from medgen.cli.main import main

    assert main(["evaluate", "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "x"), "--n-reports", "0"]) == 2
    assert "--n-reports must be >= 1" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tiny_pipeline_dir), "--out", str(tmp_path / "x"),
                 "--manifest", str(tmp_path / "missing.jsonl")]) == 2
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ oracle ceilings


@pytest.fixture(scope="module")
def oracle_cases():
    """Held-out cases on the default 64^3 x 5 mm grid (the analyzer's working resolution)."""
    return make_heldout_cases(12, shape=(64,) * 3, spacing=(5.0,) * 3, seed=11)


def test_fidelity_scorer_rates_the_phantoms_themselves_highly(oracle_cases):
    oracle = PhantomOracle(oracle_cases)
    summary, generated, records = score_fidelity(oracle_cases, oracle, seeds=(0,))
    assert oracle.n_generated == summary["n_generated"] == len(records) == 12
    assert generated[(0, 0)] is oracle_cases[0].real
    mean = {k: v["mean"] for k, v in summary["overall"].items()}
    # what a report states must be recovered from the true volume (the analyzer's own accuracy)
    for key in ("lesion_side", "normal_specificity", "effusion_presence", "emphysema_presence",
                "lesion_density_class", "lesion_size_within_30pct_ge20mm"):
        assert mean[key] >= 0.9, (key, mean)
    assert mean["lesion_zone"] >= 0.7 and mean["lesion_lobe"] >= 0.7, mean
    assert mean["lesion_size_abs_rel_error"] <= 0.2, mean
    assert mean["false_positive_lesions_per_volume"] <= 0.25, mean
    assert mean["lesion_detected"] >= 0.3, mean  # small (< 15 mm) lesions at 5 mm voxels are often missed
    assert set(summary["by_language"]) == {"en", "zh"}


def test_calibration_scorer_on_phantoms_at_the_requested_density(oracle_cases):
    cases = select_calibration_cases(oracle_cases, 3, min_diameter_mm=20.0)
    assert cases, "no held-out case with a lesion >= 20 mm"
    oracle = PhantomOracle(cases)
    result = score_calibration(cases, oracle, seeds=(0,))
    assert result["n_generated"] == oracle.n_generated == 5 * len(cases)
    assert result["detected_fraction"] >= 0.8
    measured = {p["d"]: p["measured_hu"] for p in result["points"] if p["case"] == cases[0].index}
    found = [measured[d] for d in sorted(measured) if measured[d] is not None]
    assert found == sorted(found), measured  # denser request -> brighter lesion
    rho = next(v for k, v in result.items() if "rho" in k or "spearman" in k)
    assert rho >= 0.9


# ---------------------------------------------------------------------------------- pieces


def test_alignment_pairs_from_a_manifest_train_split(tmp_path):
    from medgen.dataset.manifest import write_manifest
    from medgen.evaluation.suite import QUICK, _alignment_pairs
    from medgen.io import save_nifti

    cases = make_heldout_cases(3, shape=(32,) * 3, spacing=(10.0,) * 3, seed=5)
    rows = []
    for c, split in zip(cases, ("train", "train", "val"), strict=True):
        save_nifti(c.real, tmp_path / f"c{c.index}.nii.gz")
        rows.append({"id": f"c{c.index}", "image": str(tmp_path / f"c{c.index}.nii.gz"), "report": c.report,
                     "language": c.language, "split": split, "findings": c.findings.to_dict()})
    manifest = write_manifest(tmp_path / "manifest.jsonl", rows)
    volumes, reports, findings, source = _alignment_pairs(QUICK, (32,) * 3, (10.0,) * 3, manifest)
    assert len(volumes) == len(reports) == len(findings) == 2 and "train split" in source
    assert reports[0][0] == cases[0].report and len(reports[0]) == 3  # + EN and ZH train-phrasing reports
    np.testing.assert_array_equal(volumes[1].array, cases[1].real.array)
    assert findings[1].lesions == cases[1].findings.lesions
    write_manifest(tmp_path / "val.jsonl", rows[2:])
    with pytest.raises(ValueError, match="need >= 2 train rows"):
        _alignment_pairs(QUICK, (32,) * 3, (10.0,) * 3, tmp_path / "val.jsonl")


def test_retrieval_metrics_identity_and_chance():
    emb = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    perfect = align.volume_retrieval_metrics(emb, emb)
    assert perfect["top1"] == perfect["top5"] == 1.0 and perfect["mean_rank"] == 1.0
    assert perfect["chance_top1"] == pytest.approx(1 / 6) and perfect["chance_top5"] == pytest.approx(5 / 6)
    reversed_ = align.volume_retrieval_metrics(emb, -emb)  # every correct pair is the least similar
    assert reversed_["top1"] == 0.0 and reversed_["mean_rank"] == 6.0
    with pytest.raises(ValueError, match="6 reports but 5 volumes"):
        align.volume_retrieval_metrics(emb, emb[:5])


def test_attribute_targets():
    from medgen.findings import Effusion, Findings, Lesion

    binary, density = align.attribute_targets(Findings(
        [Lesion("left_lower", 12.0, 0.2), Lesion("right_upper", 30.0, 0.9)], Effusion("bilateral", "small")))
    assert binary.tolist() == [1, 0, 0, 0, 1, 1, 1, 0, 0]
    assert density == pytest.approx(0.9)
    binary, density = align.attribute_targets(Findings())
    assert binary.tolist() == [0] * 8 + [1] and math.isnan(density)


def test_ms_ssim_identity_and_difference():
    cases = make_heldout_cases(2, shape=(32,) * 3, spacing=(10.0,) * 3)
    a, b = cases[0].real, cases[1].real
    assert rea.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < rea.ms_ssim(a, b) < 0.99
    with pytest.raises(ValueError, match="same grid"):
        rea.ms_ssim(a, Volume(np.zeros((16, 16, 16)), make_affine((16,) * 3, 20.0)))
    with pytest.raises(ValueError, match="too small"):
        rea.ms_ssim_settings(4)
    assert rea.ms_ssim_settings(64)["kernel_size"] == 11


def test_feature_distances_separate_shifted_sets():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    out = rea.compare_feature_sets(a, b + 3.0, b)
    assert out["mmd"] > 5 * abs(out["mmd_real_vs_real"])
    assert out["frechet"] > 5 * out["frechet_real_vs_real"]
    with pytest.raises(ValueError, match="at least 2"):
        rea.mmd(a[:1], b[:1])


def test_intensity_features_depend_on_the_image():
    cases = make_heldout_cases(1, shape=(32,) * 3, spacing=(10.0,) * 3)
    f = rea.intensity_features(cases[0].real)
    flat = rea.intensity_features(Volume(np.full((32,) * 3, 40.0, np.float32), cases[0].real.affine))
    assert f.shape == flat.shape == (38,) and np.isfinite(f).all()
    assert not np.allclose(f, flat)


def test_aggregate_records_skips_not_applicable():
    records = [{"case": 0, "seed": 0, "language": "en", "side": True, "grade": None, "size_error": 0.1},
               {"case": 1, "seed": 0, "language": "zh", "side": False, "grade": True, "size_error": 0.3}]
    agg = aggregate_records(records)
    assert agg["overall"]["side"] == {"mean": 0.5, "n": 2}
    assert agg["overall"]["grade"] == {"mean": 1.0, "n": 1}
    assert agg["by_language"]["en"]["side"]["mean"] == 1.0 and "grade" not in agg["by_language"]["en"]
    assert "case" not in agg["overall"] and "seed" not in agg["overall"]


def test_check_bars_uses_the_measured_figures():
    from medgen.evaluation.suite import check_bars

    bars = check_bars({"fidelity": {"overall": {"lesion_side": {"mean": 0.97, "n": 10},
                                                "lesion_lobe": {"mean": 0.5, "n": 10}}},
                       "calibration": {"spearman_rho": 0.95, "mae_hu": 150.0},
                       "speed": {"device": "cpu", "seconds_per_volume": {"64": 8.0}}})
    assert bars["lesion_side"] == {"bar": ">= 0.95", "value": 0.97, "pass": True}
    assert bars["lesion_lobe"]["pass"] is False and bars["density_mae_hu"]["pass"] is False
    assert bars["density_spearman_rho"]["pass"] is True and bars["cpu_64_seconds_per_volume"]["pass"] is True
    assert bars["effusion_side"] == {"bar": ">= 0.9", "value": None, "pass": None}


def test_jsonable_is_strict_json():
    out = jsonable({"a": np.float32(1.5), "b": float("nan"), "c": (np.int64(2), np.bool_(True)), "d": np.ones(2)})
    assert out == {"a": 1.5, "b": None, "c": [2, True], "d": [1.0, 1.0]}
    json.dumps(out, allow_nan=False)


def test_heldout_cases_alternate_languages_and_use_heldout_families():
    from medgen.reports.writer import PHRASING_FAMILIES

    cases = make_heldout_cases(4, shape=(32,) * 3, spacing=(10.0,) * 3)
    assert [c.language for c in cases] == ["en", "zh", "en", "zh"]
    assert all(c.family in PHRASING_FAMILIES["heldout"] for c in cases)
    assert all(c.real.shape == (32, 32, 32) for c in cases)
    with pytest.raises(ValueError, match="must be >= 1"):
        make_heldout_cases(0, shape=(32,) * 3, spacing=(10.0,) * 3)


def test_quick_run_reports_progress(quick):
    results, _, _, stderr = quick
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6"):
        assert f"medgen evaluate: {step}" in stderr
    assert "fidelity" in stderr and "calibration" in stderr and "volume" in stderr  # the tqdm bars
    for name, seconds in results["meta"]["timings_s"].items():
        assert f"  {name}: {seconds:.0f} s" in stderr


def test_noise_power_and_lung_histogram_features_tell_smooth_from_white_noise():
    from scipy import ndimage

    from medgen.evaluation.realism import NPS_BANDS, lung_histogram_features, noise_power_features
    from medgen.volume import make_affine

    rng = np.random.default_rng(0)
    white = (-850 + 30 * rng.standard_normal((48, 48, 48))).astype(np.float32)
    smooth = (-850 + 30 * ndimage.gaussian_filter(rng.standard_normal((48, 48, 48)), 1.5) * 6).astype(np.float32)
    aff = make_affine((48, 48, 48), 5.0)
    nps_white, nps_smooth = (noise_power_features(Volume(v, aff)) for v in (white, smooth))
    assert nps_white.shape == (NPS_BANDS + 1,) and np.isclose(nps_white[:NPS_BANDS].sum(), 1.0)
    assert nps_white[NPS_BANDS - 1] > nps_white[0]  # white noise: most power at high frequency (more shells there)
    assert nps_smooth[0] > nps_white[0] and nps_smooth[NPS_BANDS - 1] < nps_white[NPS_BANDS - 1]
    hist = lung_histogram_features(Volume(white, aff))
    assert np.isclose(hist.sum(), 1.0) and hist.argmax() == np.searchsorted(np.linspace(-1000, -500, 26), -850) - 1
    assert not noise_power_features(Volume(np.full((8, 8, 8), 40.0, np.float32), make_affine((8, 8, 8), 5.0))).any()
