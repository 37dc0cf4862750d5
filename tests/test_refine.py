"""Resolution cascade: output-grid semantics, seam-free tiling, learned refiner stages (save/load, training,
pipeline use) and phantom patches built off-centre."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.refine import TrilinearStage, plan_grid, run_cascade, tilewise, upsample_labels
from medgen.refine.model import LearnedStage, RefinerNet, load_refiner, stage_folders


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------- grid plan

def test_shape_keeps_the_field_of_view():
    plan = plan_grid(64, 5.0, shape=(512, 512, 512))
    assert plan.shape == (512,) * 3 and plan.spacing == (0.625,) * 3 and plan.stages == 3
    assert plan.fov_mm == (320.0,) * 3
    assert plan_grid(64, 5.0).stages == 0 and plan_grid(64, 5.0).shape == (64,) * 3
    assert plan_grid(64, 5.0, spacing=1.25).shape == (256,) * 3
    assert plan_grid(64, 5.0, fov=320, shape=128).spacing == (2.5,) * 3
    assert plan_grid(64, 5.0, fov=(320, 320, 320), spacing=2.5).shape == (128,) * 3
    record = plan_grid(64, 5.0, shape=128).record(["a", "b"])
    assert record == {"native_shape": [64] * 3, "native_spacing": [5.0] * 3, "fov_mm": [320.0] * 3,
                      "stages": ["a", "b"]}


@pytest.mark.parametrize("kwargs, message", [
    ({"shape": 8}, "below the model's native grid"),
    ({"shape": (128, 128, 64)}, "anisotropic"),
    ({"shape": 96}, "not reachable"),
    ({"shape": 1024}, "not reachable"),
    ({"shape": (64, 64)}, "one or three positive integers"),
    ({"shape": 64.0}, "positive integers"),
    ({"shape": True}, "positive integers"),
    ({"spacing": 3.0}, "whole voxels"),
    ({"spacing": 10.0}, "below the model's native grid"),
    ({"spacing": -1.0}, "positive numbers"),
    ({"spacing": float("inf")}, "positive numbers"),
    ({"fov": 400.0}, "field of view"),
    ({"fov": 160.0}, "field of view"),
    ({"shape": 128, "spacing": 2.0}, "covers"),
    ({"shape": 128, "spacing": 2.5, "fov": 320.0}, "at most two"),
])
def test_every_misuse_is_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        plan_grid(64, 5.0, **kwargs)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------- tiling

def test_trilinear_stage_equals_whole_volume_interpolation_and_keeps_no_seam():
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 300, (20, 13, 9)).astype(np.float32)
    whole = F.interpolate(torch.from_numpy(volume)[None, None], scale_factor=2, mode="trilinear",
                          align_corners=False)[0, 0].numpy()
    for tile in (4, 7, 64):
        out = tilewise(lambda x: F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False),
                       volume, halo=1, tile=tile)
        np.testing.assert_allclose(out, whole, atol=1e-4)
    np.testing.assert_allclose(TrilinearStage()(volume), whole, atol=1e-4)


def test_learned_stage_tiles_reproduce_the_whole_volume():
    torch.manual_seed(0)
    net = RefinerNet(channels=4, blocks=2)
    torch.nn.init.normal_(net.tail.weight, 0, 0.1)  # not the identity: the reach matters
    stage = LearnedStage(net, spacing_mm=2.5, tile=64)
    volume = np.random.default_rng(1).normal(-300, 300, (18, 11, 14)).astype(np.float32)
    whole = stage(volume)
    stage.tile = 5
    np.testing.assert_allclose(stage(volume), whole, atol=1e-3)
    assert whole.shape == (36, 22, 28) and whole.min() >= -1024 and whole.max() <= 3071


def test_tilewise_rejects_non_3d():
    with pytest.raises(ValueError, match="3D"):
        tilewise(lambda x: x, np.zeros((4, 4)))


def test_cascade_names_every_stage_and_grid():
    volume = np.zeros((8, 8, 8), np.float32)
    out, names = run_cascade(volume, [TrilinearStage(), TrilinearStage()], (5.0, 5.0, 5.0))
    assert out.shape == (32,) * 3
    assert names == ["render 8x8x8 @ 5x5x5 mm", "trilinear x2 -> 16x16x16 @ 2.5x2.5x2.5 mm",
                     "trilinear x2 -> 32x32x32 @ 1.25x1.25x1.25 mm"]


def test_labels_keep_their_native_voxel():
    labels = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    fine = upsample_labels(labels, 4)
    assert fine.shape == (8, 8, 8)
    assert (fine[:4, :4, :4] == 0).all() and (fine[4:, 4:, 4:] == 7).all() and (fine[4:, :4, 4:] == 5).all()


# --------------------------------------------------------------------------------- refiner storage

def test_refiner_stage_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(2)
    net = RefinerNet(channels=4, blocks=1)
    torch.nn.init.normal_(net.tail.weight, 0, 0.1)
    LearnedStage(net, spacing_mm=1.25).save_pretrained(tmp_path / "ref" / "stage_1")
    LearnedStage(net, spacing_mm=0.625).save_pretrained(tmp_path / "ref" / "stage_3")  # a gap: stage 2 missing
    assert [f.name for f in stage_folders(tmp_path / "ref")] == ["stage_1"]
    (loaded,) = load_refiner(tmp_path / "ref")
    assert loaded.spacing_mm == 1.25 and loaded.net.config == {"channels": 4, "blocks": 1}
    volume = np.random.default_rng(0).normal(-500, 200, (6, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(loaded(volume), LearnedStage(net, spacing_mm=1.25)(volume), atol=1e-4)
    with pytest.raises(ModelNotFoundError, match="not a refiner stage"):
        LearnedStage.from_pretrained(tmp_path / "nothing")
    (tmp_path / "ref" / "stage_1" / "config.json").write_text(json.dumps({"channels": 4}))
    with pytest.raises(InputFileError, match="invalid refiner stage"):
        LearnedStage.from_pretrained(tmp_path / "ref" / "stage_1")


def test_untrained_refiner_is_trilinear_on_validation_patches():
    from medgen.refine.train import compare_on, make_patch

    patches = np.stack([make_patch(s, 2.5, 24) for s in range(2)])
    scores = compare_on(RefinerNet(channels=4, blocks=1), patches)  # zero tail: output = trilinear
    assert scores["mae_hu"]["refiner"] == pytest.approx(scores["mae_hu"]["trilinear"], rel=1e-5)
    assert scores["edge_mae_hu"]["trilinear"] > scores["mae_hu"]["trilinear"] > 0


def test_train_refiner_cli_writes_stages_and_a_summary(tmp_path, capsys):
    from medgen.cli.main import main

    out = tmp_path / "refiner"
    assert main(["train", "refiner", "--out", str(out), "--stages", "2", "--steps", "3", "--n-patches", "4",
                 "--patch", "16", "--channels", "4", "--blocks", "1", "--quiet"]) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert [s["spacing_mm"] for s in summary["stages"]] == [2.5, 1.25]  # the default model renders at 5 mm
    assert all(np.isfinite(s["validation"]["mae_hu"]["refiner"]) for s in summary["stages"])
    assert len(load_refiner(out)) == 2 and "stage 2 (1.25 mm)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------- phantom patch

def test_an_off_centre_phantom_patch_is_part_of_the_same_subject():
    from medgen.phantom.chest import make_phantom

    whole = make_phantom(None, shape=32, spacing=10.0, seed=5)
    # voxel k of the whole grid lies at (k - 15.5) * 10 mm; a patch of 8 centred at (k0 - 12) * 10 starts at k0
    patch = make_phantom(None, shape=8, spacing=10.0, seed=5, center_mm=(-80.0, 0.0, 40.0))
    np.testing.assert_array_equal(np.asarray(patch.labels.array),
                                  np.asarray(whole.labels.array)[4:12, 12:20, 16:24])
    np.testing.assert_allclose(patch.image.affine[:3, 3], whole.image.affine[:3, :3] @ [4, 12, 16]
                               + whole.image.affine[:3, 3])


# ------------------------------------------------------------------------------------------- pipeline

def test_pipeline_saves_loads_and_runs_its_learned_stages(tiny_bert_dir, tmp_path):
    from test_pipeline import make_tiny_pipeline

    from medgen.pipelines import ReportToVolumePipeline

    pipe = make_tiny_pipeline(tiny_bert_dir)
    torch.manual_seed(3)
    net = RefinerNet(channels=4, blocks=1)
    torch.nn.init.normal_(net.tail.weight, 0, 0.1)
    pipe.refiner = [LearnedStage(net, spacing_mm=20.0)]
    folder = pipe.save_pretrained(tmp_path / "model")
    index = json.loads((folder / "model_index.json").read_text())
    assert "refiner/stage_1/refiner.safetensors" in index["weights_sha256"]
    loaded = ReportToVolumePipeline.from_pretrained(folder)
    assert len(loaded.refiner) == 1
    fast = {"num_inference_steps": 1, "guidance_scale": 1.0, "progress": False}
    result = loaded("A 2 cm nodule in the right upper lobe.", shape=(32, 32, 32), **fast)
    stages = result.provenance["grid"]["stages"]
    assert stages[1].startswith("learned refiner x2 -> 16x16x16") and stages[2].startswith("trilinear x2 -> 32x32x32")
    assert result.volume.shape == (32, 32, 32) and result.volume.spacing == pytest.approx((10.0,) * 3)
    plain = ReportToVolumePipeline.from_pretrained(folder)
    plain.refiner = []
    other = plain("A 2 cm nodule in the right upper lobe.", shape=(32, 32, 32), **fast)
    assert not np.allclose(other.volume.array, result.volume.array)  # the learned stage changed the voxels
