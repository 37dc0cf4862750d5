"""medgen.slices: captioned slices (what the slice shows, EN + ZH) and the CLIP-style slice-report model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from medgen.cli.main import main
from medgen.errors import ModelNotFoundError
from medgen.findings import LABELS, Effusion, Emphysema, Findings, Lesion
from medgen.slices import SliceConfig, manifest_slices, phantom_slices, slice_transform
from medgen.slices.clip import (
    SliceCLIP,
    clip_score,
    contrastive_loss,
    rank_metrics,
    retrieval_metrics,
    train_clip,
)

TINY_VISION = {
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
SMALL = SliceConfig(shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0), size=64)


@pytest.mark.parametrize(
    "lobe, diameter, density, words_en, words_zh",
    [
        ("right_upper", 24.0, 0.5, ("part-solid nodule", "right upper lobe"), ("右肺上叶", "部分实性结节")),
        ("left_lower", 36.0, 0.9, ("solid mass", "left lower lobe"), ("左肺下叶", "实性肿块")),
    ],
)
def test_key_slice_caption_names_lesion_side_lobe_type_and_size(lobe, diameter, density, words_en, words_zh):
    findings = Findings([Lesion(lobe, diameter, density)])
    axial, coronal = phantom_slices(7, views=("axial", "coronal"), findings=findings)
    for sample in (axial, coronal):
        for words in words_en:
            assert words in sample.caption_en
        for words in words_zh:
            assert words in sample.caption_zh
        assert (
            "left" not in sample.caption_en if lobe.startswith("right") else "right" not in sample.caption_en
        )
        (cut,) = sample.findings["lesions"]
        assert cut["side"] == lobe.split("_")[0] and cut["lobe"] == lobe
        assert (
            abs(cut["size_mm"] - diameter) <= 0.12 * diameter
        )  # the key slice passes through the widest part
        assert (
            f"{round(cut['size_mm'])} mm" in sample.caption_en
            and f"约{round(cut['size_mm'])} mm" in sample.caption_zh
        )
        assert not sample.findings["normal"]
    # the axial key slice lies within one slice (5 mm) of the lesion centre; the lesion's pixels are labelled
    from medgen.phantom.chest import make_phantom

    centre_z = (
        make_phantom(findings, shape=SliceConfig().shape, spacing=SliceConfig().spacing, seed=7)
        .findings.lesions[0]
        .center_mm[2]
    )
    assert abs(axial.findings["z_mm"] - centre_z) <= 5.0
    assert (axial.label2d == LABELS["lesion"]).sum() * 2.5 * 2.5 >= 0.7 * math.pi * (diameter / 2) ** 2


def test_slice_without_findings_is_normal_and_image_goes_through_monai_window():
    (sample,) = phantom_slices(11, findings=Findings())
    assert (
        sample.findings["normal"] and sample.findings["lesions"] == [] and sample.findings["effusion"] is None
    )
    assert sample.caption_en == "Axial CT slice: normal lungs, no nodule, mass or pleural effusion."
    assert sample.caption_zh == "轴位CT层面：双肺未见明显异常，未见结节、肿块及胸腔积液。"
    assert sample.image.shape == (1, 128, 128) and sample.image.dtype == np.float32
    expected = np.clip((sample.hu + 1024.0) / 2048.0 * 2.0 - 1.0, -1, 1)  # HU window -> [-1, 1], native 128^2
    np.testing.assert_allclose(sample.image[0], expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(slice_transform(size=64)(sample.hu)).shape, (1, 64, 64))


def test_emphysema_is_captioned_where_the_slice_shows_it():
    (sample,) = phantom_slices(4, findings=Findings(emphysema=Emphysema("severe")))
    assert sample.findings["emphysema"] == "severe" and sample.findings["laa950_percent"] >= 1.0
    assert (
        sample.caption_en == "Axial CT slice: severe emphysema."
        and sample.caption_zh == "轴位CT层面：重度肺气肿。"
    )


def test_effusion_side_from_the_fluid_and_display_orientation():
    (sample,) = phantom_slices(3, findings=Findings(effusion=Effusion("left", "large")))
    assert sample.findings["effusion"] == "left"
    assert "left pleural effusion" in sample.caption_en and "right" not in sample.caption_en
    assert "左侧胸腔积液" in sample.caption_zh
    cols = np.nonzero(sample.label2d == LABELS["effusion"])[1]
    assert cols.size and (cols > sample.label2d.shape[1] / 2).all()  # patient's left on the image's right


def test_manifest_slices_caption_lesions_of_the_row(tiny_manifest):
    rows = [json.loads(line) for line in tiny_manifest.read_text().splitlines()]
    samples = manifest_slices(tiny_manifest, limit=3, progress=False)
    assert [s.findings["subject"] for s in samples] == [row["id"] for row in rows[:3]]
    for sample, row in zip(samples, rows, strict=False):
        lobes = {lesion["lobe"] for lesion in row["findings"]["lesions"]}
        assert {cut["lobe"] for cut in sample.findings["lesions"]} <= lobes
        if row["findings"]["lesions"] and sample.findings["lesions"]:
            sizes = [float(x) for x in re.findall(r"(\d+) mm", sample.caption_en)]
            assert sizes == [round(cut["size_mm"]) for cut in sample.findings["lesions"]]


def test_rank_metrics_on_a_hand_built_similarity():
    sim = np.array(
        [
            [0.9, 0.1, 0.2, 0.0, 0.3, 0.1],  # image 0: its text is first
            [0.8, 0.5, 0.1, 0.0, 0.0, 0.2],  # image 1: second
            [0.5, 0.4, 0.0, 0.3, 0.2, 0.1],  # image 2: last of 6
            [0.1, 0.0, 0.2, 0.7, 0.3, 0.0],  # image 3: first
            [0.0, 0.0, 0.1, 0.2, 0.6, 0.6],  # image 4: tied with a wrong text (ties count against)
            [0.85, 0.8, 0.7, 0.6, 0.0, 0.5],  # image 5: fifth
        ]
    )
    out = rank_metrics(sim)
    assert out["image_to_text_top1"] == pytest.approx(2 / 6) and out["image_to_text_top5"] == pytest.approx(
        5 / 6
    )
    # columns: text 0, 3 and 4 find their image first; 1 and 5 second; 2 last (every image scores >= 0.0)
    assert out["text_to_image_top1"] == pytest.approx(3 / 6) and out["text_to_image_top5"] == pytest.approx(
        5 / 6
    )
    assert rank_metrics(sim.T)["image_to_text_top1"] == out["text_to_image_top1"]
    assert rank_metrics(np.zeros((4, 4)))["image_to_text_top1"] == 0.0
    # identical captions are each other's match: image 1 prefers text 0 ("a") over both "normal" texts (wrong)
    dup = rank_metrics(
        np.array([[1.0, 0.0, 0.5], [0.9, 0.2, 0.1], [0.0, 0.1, 0.8]]), ["a", "normal", "normal"]
    )
    assert dup["image_to_text_top1"] == pytest.approx(2 / 3)
    # image 1 prefers text 2: not its own, but the same caption -> correct
    dup = rank_metrics(
        np.array([[1.0, 0.0, 0.5], [0.0, 0.2, 0.9], [0.0, 0.1, 0.8]]), ["a", "normal", "normal"]
    )
    assert dup["image_to_text_top1"] == 1.0


def test_contrastive_loss_treats_identical_captions_as_positives():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert contrastive_loss(logits, ["a", "b"]).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    both = 0.5 * math.log(1 + math.exp(-1)) + 0.5 * math.log(1 + math.e)
    assert contrastive_loss(logits, ["a", "a"]).item() == pytest.approx(both, abs=1e-6)


@pytest.fixture(scope="module")
def small_slices():
    from medgen.slices import phantom_slice_set

    return phantom_slice_set(8, seed0=530_000, config=SMALL, progress=False)


def _tiny_clip(encoder_dir) -> SliceCLIP:
    torch.manual_seed(0)
    return SliceCLIP.from_text_encoder(encoder_dir, vision=TINY_VISION, image_size=32, embed_dim=16)


def test_clip_save_load_round_trip_gives_identical_embeddings(tiny_bert_dir, small_slices, tmp_path):
    model = _tiny_clip(tiny_bert_dir).eval()
    path = model.save_pretrained(tmp_path / "clip")
    loaded = SliceCLIP.from_pretrained(path)
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(
            model.encode_image(model.preprocess(small_slices[:3])),
            loaded.encode_image(loaded.preprocess(small_slices[:3])),
        )
        texts = [s.caption_zh for s in small_slices[:3]]
        assert torch.equal(model.encode_text(texts), loaded.encode_text(texts))
    assert clip_score(model, small_slices[0], small_slices[0].caption_en) == clip_score(
        loaded, small_slices[0].hu, small_slices[0].caption_en
    )
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors",
        "slice_clip_config.json",
        "text_encoder",
    ]
    with pytest.raises(ModelNotFoundError, match="no slice CLIP model"):
        SliceCLIP.from_pretrained(tmp_path / "missing")


def test_tiny_training_reduces_the_loss(tiny_bert_dir, small_slices):
    model = _tiny_clip(tiny_bert_dir)
    losses = train_clip(
        model, small_slices, steps=20, batch_size=8, lr=2e-3, languages=("en",), augment=False, progress=False
    )
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1
    metrics = retrieval_metrics(model, [(s, s.caption_en) for s in small_slices])
    assert metrics["n"] == 8 and 0.0 <= metrics["image_to_text_top1"] <= metrics["image_to_text_top5"] <= 1.0
    with pytest.raises(ValueError, match="steps"):
        train_clip(model, small_slices, steps=0)


def test_cli_writes_slices_and_bad_input_exits_2(tmp_path, capsys):
    out = tmp_path / "slices"
    assert main(["slices", "data", "--n", "1", "--seed", "5", "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["findings"]["view"] for row in rows] == ["axial", "coronal"]
    with np.load(out / rows[1]["npz"]) as arrays:
        assert arrays["image"].shape == (1, 128, 128) and arrays["hu"].shape == (64, 128)  # coronal: Z x X
    assert (out / rows[0]["png"]).stat().st_size > 0
    capsys.readouterr()
    assert main(["slices", "data", "--n", "1", "--out", str(out), "--quiet"]) == 2  # exists, no --overwrite
    assert main(["slices", "data", "--n", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["slices", "train-clip", "--out", str(tmp_path / "m"), "--steps", "0"]) == 2
    assert main(["slices", "eval-clip", "--model", str(tmp_path / "missing")]) == 2
    assert "medgen: error: no slice CLIP model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "m").exists()


def test_grounding_trains_the_image_tower_alone_and_is_recorded(tiny_bert_dir, small_slices, tmp_path):
    from medgen.slices.clip import ground_tower

    model = _tiny_clip(tiny_bert_dir)
    tower = {k: v.clone() for k, v in model.heads.vision.state_dict().items()}
    text = {k: v.clone() for k, v in model.text_encoder.model.state_dict().items()}
    record = ground_tower(model, small_slices, steps=3, batch_size=4, progress=False)
    assert record["steps"] == 3 and record["trained"] == ["vision"]
    assert any(not torch.equal(v, tower[k]) for k, v in model.heads.vision.state_dict().items())
    assert all(torch.equal(v, text[k]) for k, v in model.text_encoder.model.state_dict().items())
    assert SliceCLIP.from_pretrained(model.save_pretrained(tmp_path / "clip")).config["grounding"] == record
