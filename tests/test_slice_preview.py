"""medgen.slices.generator (SDXL-style text->slice) and medgen.slices.analyze, on a tiny model trained here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.cli.main import main
from medgen.diffusion.guidance import Guidance
from medgen.findings import LABELS, Effusion, Findings, Lesion
from medgen.layout import make_layout
from medgen.layout.labels import CHANNELS, FIRST_LESION_LABEL
from medgen.pipelines.default_model import default_model_path
from medgen.slices.analyze import score_slice
from medgen.slices.generator.data import UNKNOWN_DENSITY, batch_inputs, build_pairs
from medgen.slices.generator.model import SlicePreviewModel, predict_noise
from medgen.slices.generator.pipeline import SlicePreviewPipeline, layout_slice_findings
from medgen.slices.generator.recipe import train_preview_model
from medgen.slices.generator.sampling import build_sampler

DEFAULT = default_model_path()
TINY = {"n_subjects": 2, "extra": 1, "size": 32, "vae_channels": [16, 16], "vae_steps": 2, "vae_batch": 2,
        "base_steps": 2, "refiner_steps": 2, "unet_batch": 2, "n_ceiling": 2,
        "unet": {"block_out_channels": [16, 32], "attention_head_dim": 8, "time_embed_dim": 8},
        "student_steps": 2, "teacher_steps": 4, "distill_steps_per_round": 2}
REPORT = "A 40 mm solid mass in the right lower lobe."


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("preview") / "model"
    record = train_preview_model(out, text_encoder_dir=DEFAULT / "text_encoder", reader_dir=DEFAULT / "reader",
                                 anatomy_bank_dir=DEFAULT / "anatomy_bank", **TINY)
    return out, record


def test_recipe_records_every_stage_and_the_autoencoder_ceiling(tiny_model):
    out, record = tiny_model
    assert set(record) >= {"vae", "base", "refiner", "options", "n_pairs"}
    assert record["n_pairs"] == 4  # 2 subjects x (key slice + 1 extra)
    assert record["refiner"]["t_range"] == [0, 250] and record["base"]["t_range"] == [0, 1000]
    ceiling = record["vae"]["ceiling_held_out"]
    assert set(ceiling) == {"mae_hu_whole", "mae_hu_lesion", "mae_hu_effusion"} and ceiling["mae_hu_whole"] > 0
    config = json.loads((out / "preview.json").read_text())
    assert config["parts"] == {"text_encoder": "text_encoder", "reader": "reader", "anatomy_bank": "anatomy_bank"}
    assert config["factor"] == 2 and config["scale"] > 0
    assert [r["student_steps"] for r in record["distillation"]] == [2]  # one round: 4 -> 2 steps
    for part in ("vae", "base", "refiner", "student", "text_encoder", "reader", "anatomy_bank"):
        assert (out / part).is_dir()


def test_saved_model_loads_with_the_same_weights(tiny_model, tmp_path):
    out, _ = tiny_model
    model = SlicePreviewModel.from_pretrained(out)
    again = tmp_path / "again"
    model.save_pretrained(again, parts={"text_encoder": str(out / "text_encoder"), "reader": str(out / "reader")})
    loaded = SlicePreviewModel.from_pretrained(again)
    assert not (again / "reader").exists()  # linked, not copied
    for a, b in zip(model.base.state_dict().values(), loaded.base.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert loaded.refiner is not None and "anatomy_bank" not in loaded.sources


def test_missing_preview_folder_is_a_clear_error(tmp_path):
    from medgen.errors import InputFileError

    with pytest.raises(InputFileError, match="not a slice preview model folder"):
        SlicePreviewModel.from_pretrained(tmp_path)


def test_preview_shows_the_layout_key_slice_of_the_3d_layout(tiny_model):
    out, _ = tiny_model
    pipe = SlicePreviewPipeline.from_pretrained(out)
    result = pipe(REPORT, n=3, seed=5, steps=3)
    assert result.hu.shape == (3, 32, 32) and result.hu.dtype == np.float32
    assert -1024.0 <= result.hu.min() and result.hu.max() <= 1024.0
    assert "right lower lobe" in result.caption and "solid mass" in result.caption
    assert (result.labels >= FIRST_LESION_LABEL).any()  # the key slice cuts the lesion
    # the same report and seed put the lesion where the 3D layout at the default's 64^3 grid puts it
    grid = make_layout(result.layout.findings, shape=(64, 64, 64), spacing=5.0, seed=5,
                       anatomy=pipe.bank.retrieve(pipe.model.text_encoder.first([REPORT]).pooled[0].numpy(), 5)[0])
    assert np.allclose(grid.findings.lesions[0].center_mm, result.layout.findings.lesions[0].center_mm)
    again = pipe(REPORT, n=3, seed=5, steps=3)
    assert np.array_equal(again.hu, result.hu)
    assert not np.array_equal(result.hu[0], result.hu[1])  # candidates differ
    other = pipe(REPORT, n=1, seed=6, steps=3, sampler="ddim", use_refiner=False)
    assert other.hu.shape == (1, 32, 32)


def test_chinese_report_gets_a_chinese_caption(tiny_model):
    pipe = SlicePreviewPipeline.from_pretrained(tiny_model[0])
    result = pipe("左肺下叶见实性肿块，大小约40 mm。", n=1, seed=1, steps=2)
    assert "左肺下叶" in result.caption and "实性肿块" in result.caption


def test_preview_input_errors(tiny_model):
    pipe = SlicePreviewPipeline.from_pretrained(tiny_model[0])
    with pytest.raises(ValueError, match="report or findings"):
        pipe(None)
    with pytest.raises(ValueError, match="positive number"):
        pipe(REPORT, n=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe(REPORT, density=1.5)
    with pytest.raises(ValueError, match="`sampler`"):
        build_sampler(pipe.model.config, "euler")


def test_layout_slice_findings_read_lesion_and_fluid_from_the_layout():
    findings = Findings([Lesion("left_upper", 30.0, 0.9)], effusion=Effusion("right", "moderate"))
    layout = make_layout(findings, shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0), seed=3)
    labels = np.asarray(layout.labels.array)
    index = int(np.argmax((labels >= FIRST_LESION_LABEL).sum(axis=(0, 1))))
    shown = layout_slice_findings(layout, index)
    (lesion,) = shown["lesions"]
    assert lesion["lobe"] == "left_upper" and lesion["type"] == "solid"
    assert abs(lesion["size_mm"] - 30.0) <= 8.0
    fluid_index = int(np.argmax((labels == LABELS["effusion"]).sum(axis=(0, 1))))
    assert layout_slice_findings(layout, fluid_index)["effusion"] == "right"


def test_density_branch_without_density_zeroes_the_density_channel():
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x, t, encoder_hidden_states, encoder_attention_mask, added_cond_kwargs):
            seen["x"], seen["time_ids"] = x, added_cond_kwargs["time_ids"]
            return type("Out", (), {"sample": x[:, :4]})()

    layout = torch.ones(2, len(CHANNELS), 4, 4)
    conditions = {"token_states": torch.zeros(2, 3, 8), "attention_mask": torch.ones(2, 3),
                  "pooled": torch.zeros(2, 8), "density": torch.tensor([0.7, float("nan")])}
    predict_noise(Probe(), torch.zeros(2, 4, 4, 4), torch.tensor(10), layout, conditions, np.zeros((2, 6)))
    density_channel = seen["x"][:, 4 + CHANNELS.index("density")]
    assert torch.all(density_channel[0] == 1.0) and torch.all(density_channel[1] == 0.0)
    assert seen["time_ids"][0, -1] == pytest.approx(700.0)  # density scaled for the sinusoidal embedding
    assert seen["time_ids"][1, -1] == pytest.approx(UNKNOWN_DENSITY * 1000.0)


def test_crop_augmentation_records_its_offset_and_keeps_image_and_layout_aligned():
    pairs = build_pairs(1, seed0=4, extra=0, size=32, progress=False)
    plain = batch_inputs(pairs, [0], crop_p=0.0)
    assert plain["image"].shape == (1, 1, 32, 32) and plain["layout"].shape == (1, len(CHANNELS), 32, 32)
    assert np.all(plain["micro"][0, 3:5] == 0)
    cropped = batch_inputs(pairs, [0], crop_p=1.0, rng=np.random.default_rng(0))
    top, left = cropped["micro"][0, 3:5]
    assert top > 0 or left > 0
    for batch in (plain, cropped):  # the image is dark where the layout has no body and bright on its bone
        image, layout = batch["image"][0, 0], batch["layout"][0]
        outside = layout[[CHANNELS.index(c) for c in CHANNELS[:-1]]].sum(0) < 0.01
        bone = layout[CHANNELS.index("bone")] > 0.99
        assert float(image[outside].mean()) < -0.75 and float(image[bone].mean()) > 0.1


def test_score_slice_checks_presence_side_and_fluid():
    labels = np.zeros((40, 40), np.uint8)
    labels[5:35, 5:35] = LABELS["body"]
    labels[10:30, 8:18] = LABELS["right_lower"]
    labels[10:30, 22:32] = LABELS["left_lower"]
    labels[14:18, 10:14] = FIRST_LESION_LABEL
    labels[26:30, 22:32] = LABELS["effusion"]
    hu = np.where(labels == LABELS["body"], 40.0, -850.0).astype(np.float32)
    hu[labels == LABELS["effusion"]] = 10.0
    hu[14:18, 10:14] = 30.0
    scored = score_slice(hu, labels)
    (lesion,) = scored["lesions"]
    assert lesion["present"] and lesion["on_side"] and lesion["density"] == pytest.approx((30.0 + 750.0) / 800.0, abs=1e-3)
    assert scored["effusion"] == [{"side": "left", "present": True, "median_hu": 10.0}]
    wrong = np.where(labels == LABELS["body"], 40.0, -850.0).astype(np.float32)
    wrong[14:18, 26:30] = 30.0  # the lesion drawn in the other lung
    (lesion,) = score_slice(wrong, labels)["lesions"]
    assert not lesion["present"] and not lesion["on_side"]
    with pytest.raises(ValueError, match="same 2D grid"):
        score_slice(hu[:10], labels)


def test_cli_preview_writes_png_and_sidecar_and_refuses_bad_input(tiny_model, tmp_path, capsys):
    out = tmp_path / "p.png"
    code = main(["preview", "--report", REPORT, "--out", str(out), "--n", "2", "--steps", "2", "--model",
                 str(tiny_model[0]), "--npz"])
    assert code == 0 and out.is_file()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["synthetic"] is True and "right lower lobe" in sidecar["caption"]
    assert np.load(out.with_suffix(".npz"))["hu"].shape == (2, 32, 32)
    assert main(["preview", "--report", REPORT, "--out", str(out), "--model", str(tiny_model[0])]) == 2
    assert "output exists" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    assert main(["preview", "--report", REPORT, "--out", str(tmp_path / "x.jpg")]) == 2
    assert main(["preview", "--findings", str(tmp_path / "none.json"), "--out", str(bad),
                 "--model", str(tiny_model[0])]) == 2
    assert "findings file not found" in capsys.readouterr().err
    assert not bad.exists() and not bad.with_suffix(".json").exists()


def test_guidance_default_evaluates_two_branches():
    from medgen.diffusion.guidance import active_branches
    from medgen.slices.generator.pipeline import DEFAULT_GUIDANCE

    assert active_branches(DEFAULT_GUIDANCE, True) == ("uncond", "full")
    assert active_branches(Guidance(text=3.0, density=2.0), True) == ("uncond", "text", "full")


def test_fp16_saved_weights_load_as_float32(tiny_model, tmp_path):
    model = SlicePreviewModel.from_pretrained(tiny_model[0])
    reference = {k: v.clone() for k, v in model.base.state_dict().items()}
    model.base.to(torch.float16)
    model.save_pretrained(tmp_path / "half", parts={"text_encoder": str(tiny_model[0] / "text_encoder"),
                                                    "reader": str(tiny_model[0] / "reader")})
    loaded = SlicePreviewModel.from_pretrained(tmp_path / "half")
    for name, value in loaded.base.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.allclose(value, reference[name], rtol=1e-3, atol=1e-4)


def test_distillation_grid_and_ddim_move():
    from medgen.slices.generator.distill import ddim_move, grid

    assert grid(4, 1000) == [999, 749, 499, 249]
    assert set(grid(2, 1000)) <= set(grid(4, 1000))  # every student point is a teacher point
    x, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    a_t, a_s = torch.full((2, 1, 1, 1), 0.3), torch.full((2, 1, 1, 1), 0.8)
    z_t = a_t * x + (1 - a_t ** 2).sqrt() * eps
    assert torch.allclose(ddim_move(z_t, eps, a_t, a_s), a_s * x + (1 - a_s ** 2).sqrt() * eps, atol=1e-5)
    assert torch.allclose(ddim_move(z_t, eps, a_t, torch.ones_like(a_s)), x, atol=1e-5)  # alpha 1: clean


def test_distilled_sampler_runs_one_branch_and_needs_a_student(tiny_model):
    pipe = SlicePreviewPipeline.from_pretrained(tiny_model[0])
    result = pipe(REPORT, n=2, seed=3, steps=2, sampler="distilled")
    assert result.hu.shape == (2, 32, 32) and np.isfinite(result.hu).all()
    pipe.model.student = None
    with pytest.raises(ValueError, match="no distilled student"):
        pipe(REPORT, n=1, steps=2, sampler="distilled")
    with pytest.raises(ValueError, match="`sampler`"):
        pipe(REPORT, n=1, sampler="euler")


def test_embedded_preview_shows_the_reported_mass_where_the_layout_put_it():
    """The default model's preview (fp16 weights, the default text encoder, reader and anatomy bank)."""
    pipe = SlicePreviewPipeline.from_pretrained()
    result = pipe(REPORT, n=2, seed=0)
    assert result.hu.shape == (2, 128, 128) and result.hu.dtype == np.float32
    assert np.isfinite(result.hu).all() and -1100 <= result.hu.min() and result.hu.max() <= 3100
    assert result.slice_findings["lesions"][0]["side"] == "right" and "right lower lobe" in result.caption
    lesion = result.labels >= FIRST_LESION_LABEL
    lung = np.isin(result.labels, [LABELS[lobe] for lobe in ("right_upper", "right_middle", "right_lower",
                                                            "left_upper", "left_lower")])
    for hu in result.hu:  # a solid mass is far denser than the aerated lung around it
        assert np.median(hu[lesion]) > np.median(hu[lung]) + 400
        scored = score_slice(hu, result.labels)["lesions"][0]
        assert scored["present"] and scored["on_side"]


def test_a_pinned_reader_encoder_stays_the_second_text_encoder(tiny_model, tmp_path):
    """When the default report reader is retrained, the embedded preview keeps the encoder it was trained with
    (`reader_encoder` part) while findings come from the new reader."""
    from medgen.text import TextEncoder

    out, _ = tiny_model
    encoder = TextEncoder.from_pretrained(str(out / "reader" / "encoder"))
    with torch.no_grad():
        next(encoder.model.parameters()).add_(1.0)
    encoder.save_pretrained(tmp_path / "pinned" / "encoder")
    model = SlicePreviewModel.from_pretrained(out)
    model.save_pretrained(tmp_path / "again", parts={"text_encoder": str(out / "text_encoder"),
                                                     "reader": str(out / "reader"),
                                                     "reader_encoder": str(tmp_path / "pinned")})
    loaded = SlicePreviewModel.from_pretrained(tmp_path / "again")
    weight = next(loaded.text_encoder.second.model.parameters())
    assert torch.equal(weight, next(encoder.model.parameters()))
    assert not torch.equal(weight, next(model.text_encoder.second.model.parameters()))
    assert loaded.sources["reader"] == (out / "reader").resolve()
