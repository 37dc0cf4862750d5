"""medgen.slices.describer: LLaVA-style slice reader (questions, tiny model, stages, describe, CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.cli.main import main
from medgen.findings import LABELS, Findings, Lesion
from medgen.io import save_nifti
from medgen.layout.labels import FIRST_LESION_LABEL
from medgen.phantom.chest import make_phantom
from medgen.slices.describer.describe import describe_volume, lung_slices, summarize
from medgen.slices.describer.evaluate import evaluate_slice_reader, score_answers
from medgen.slices.describer.grounding import TARGETS, lesion_weighted_index, patch_targets
from medgen.slices.describer.model import SliceReader
from medgen.slices.describer.questions import KEYS, answers, findings_from_answers
from medgen.slices.describer.recipe import corpus
from medgen.slices.describer.train import IGNORE, image_batch, train_stages
from medgen.slices.generator.data import build_pairs

TINY_TEXT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 128}
TINY_VISION = {"patch_size": 32, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
               "intermediate_size": 64}
SLICE = {"lesions": [{"side": "left", "lobe": "left_lower", "size_mm": 31.4, "type": "ground-glass"}],
         "effusion": "right"}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_answers_parse_back_to_the_same_findings(language):
    read = findings_from_answers(answers(SLICE, language), language)
    assert read == {"lesion": True, "side": "left", "lobe": "left_lower", "size_mm": 31.0, "type": "ground-glass",
                    "effusion": "right"}
    assert all(score_answers(SLICE, read).values())
    none = findings_from_answers(answers({"lesions": [], "effusion": None}, language), language)
    assert none == {"lesion": False, "side": None, "lobe": None, "size_mm": None, "type": None, "effusion": None}


def test_part_solid_is_not_read_as_solid():
    read = findings_from_answers({"presence": "yes", "type": "part-solid", "size": "12 mm"}, "en")
    assert read["type"] == "part-solid" and read["size_mm"] == 12.0
    assert findings_from_answers({"presence": "有", "type": "部分实性"}, "zh")["type"] == "part-solid"


def test_size_within_30_percent_counts():
    truth = {"lesions": [{"side": "right", "lobe": "right_upper", "size_mm": 20.0, "type": "solid"}],
             "effusion": None}
    near = {"lesion": True, "side": "right", "lobe": "right_upper", "size_mm": 25.9, "type": "solid", "effusion": None}
    assert score_answers(truth, near)["size"]
    assert not score_answers(truth, {**near, "size_mm": 26.5})["size"]
    assert not score_answers(truth, {**near, "side": "left"})["side"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pairs = build_pairs(2, seed0=11, extra=1, size=64, progress=False)
    texts = corpus(pairs, 20)
    reader = SliceReader.new(texts, image_size=64, vision=TINY_VISION, text=TINY_TEXT, vocab_size=300)
    lm_before = {k: v.clone() for k, v in reader.model.model.language_model.state_dict().items()}
    tower_before = {k: v.clone() for k, v in reader.model.model.vision_tower.state_dict().items()}
    record = train_stages(reader, pairs, texts, lm_steps=0, ground_steps=2, align_steps=0, instruct_steps=0,
                          batch_size=2, progress=False)
    record["grounding_changed"] = {
        "lm": any(not torch.equal(v, lm_before[k]) for k, v in reader.model.model.language_model.state_dict().items()),
        "vision": any(not torch.equal(v, tower_before[k])
                      for k, v in reader.model.model.vision_tower.state_dict().items())}
    record.update(train_stages(reader, pairs, texts, lm_steps=2, align_steps=2, instruct_steps=3, batch_size=2,
                               progress=False))
    folder = tmp_path_factory.mktemp("slice_reader") / "reader"
    reader.save_pretrained(folder)
    return reader, record, folder, pairs


def test_patch_targets_are_label_fractions_per_patch_in_tower_order():
    labels = np.zeros((1, 8, 8), np.uint8)
    labels[0, :4, 4:] = FIRST_LESION_LABEL  # top-right quarter: patch 1 in row-major order
    labels[0, 4:, :4] = LABELS["right_lower"]
    labels[0, 6:, :4] = LABELS["effusion"]  # half of the bottom-left patch
    density = np.where(labels >= FIRST_LESION_LABEL, 0.8, 0.0).astype(np.float32)
    fractions, lesion_density = patch_targets(labels, density, patch=2, size=4)  # the tower reads 4 px: 2x2 patches
    assert fractions.shape == (1, 4, len(TARGETS))
    assert fractions[0, :, TARGETS.index("lesion")].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert fractions[0, 2, TARGETS.index("effusion")] == 0.5 and fractions[0, 2, TARGETS.index("right_lower")] == 0.5
    assert torch.allclose(lesion_density[0], torch.tensor([0.0, 0.8, 0.0, 0.0]))
    labels[0, :4, 4:] = LABELS["lesion"]  # phantom label maps name lesions by one value
    same, no_density = patch_targets(labels, None, patch=8, size=16)  # grid of the tower's input, not the map's
    assert torch.equal(same, fractions) and not no_density.any()


def test_batches_show_lesions_about_half_the_time_whatever_the_mix():
    has_lesion = np.arange(1000) < 50  # 5 % of slices show a lesion
    index = lesion_weighted_index(has_lesion, np.random.default_rng(0), 4000)
    assert 0.45 < has_lesion[index].mean() < 0.55
    assert len(set(index[~has_lesion[index]])) > 500  # the normal slices are still all drawn
    only_normal = lesion_weighted_index(np.zeros(10, bool), np.random.default_rng(0), 20)
    assert only_normal.min() >= 0 and only_normal.max() < 10


def test_vision_grounding_trains_the_tower_alone(tiny):
    _, record, _, _ = tiny
    assert record["grounding_changed"] == {"lm": False, "vision": True}
    assert record["stage0v_ground"]["trained"] == ["vision"] and record["stage0v_ground"]["steps"] == 2


def test_stages_train_the_parts_llava_trains(tiny):
    _, record, _, _ = tiny
    assert record["stage0_lm"]["trained"] == ["lm"]
    assert record["stage1_align"]["trained"] == ["projector"]
    assert record["stage2_instruct"]["trained"] == ["vision", "projector", "lm"]
    assert all(np.isfinite(record[s]["loss_last50"]) for s in ("stage0_lm", "stage1_align", "stage2_instruct"))


def test_image_batch_masks_prompt_and_image_positions(tiny):
    reader = tiny[0]
    ids, labels, mask = image_batch(reader, ["Q: Is there a lesion? A:"], ["yes"])
    n_prompt = len(reader.prompt_ids("Q: Is there a lesion? A:"))
    assert (labels[0, :n_prompt] == IGNORE).all() and (labels[0, n_prompt:] != IGNORE).all()
    assert int(labels[0, -1]) == reader.tokenizer.eos_token_id and mask.all()
    assert int((ids == reader.tokenizer.convert_tokens_to_ids("<image>")).sum()) == reader.n_image_tokens == 4


def test_saved_reader_answers_like_the_trained_one(tiny):
    reader, _, folder, pairs = tiny
    loaded = SliceReader.from_pretrained(folder)
    hu = [pairs.image[0].astype(np.float32) * 1024.0]
    assert loaded.read(hu, ["Is there a lesion?"]) == reader.read(hu, ["Is there a lesion?"])
    scores = evaluate_slice_reader(loaded, hu * 2, [pairs.findings[0]] * 2)
    assert scores["en"]["n"] == 2 and set(scores["bars"]) == {f"{lang}_{k}" for lang in ("en", "zh")
                                                            for k in ("presence", "side", "lobe", "size", "type",
                                                                      "effusion")}


def test_describe_reads_lung_slices_and_summarizes(tiny, tmp_path):
    reader = tiny[0]
    case = make_phantom(Findings([Lesion("right_upper", 30.0, 0.9)]), shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0),
                        seed=3)
    indices = lung_slices(case.image, 4)
    assert len(indices) == 4 and all(0 <= i < 32 for i in indices)
    description = describe_volume(reader, case.image, labels=case.labels, n_slices=3)
    assert len(description.slices) >= 1 and all(set(s["answers"]) == set(KEYS) for s in description.slices)
    assert description.text.endswith(".")
    slices = [{"z_mm": 5.0, "answers": answers(SLICE, "en"), "findings": findings_from_answers(answers(SLICE, "en"), "en")}]
    summary, text = summarize(slices, "en")
    assert summary["lesion"]["lobe"] == "left_lower" and summary["effusion"] == "right"
    assert text == "A 31 mm ground-glass lesion in the left lower lobe; right pleural effusion."
    with pytest.raises(ValueError, match="no lung"):
        lung_slices(case.image.with_array(np.full((64, 64, 32), 40.0, np.float32)), 3)


def test_cli_describe(tiny, tmp_path, capsys):
    _, _, folder, _ = tiny
    case = make_phantom(None, shape=(64, 64, 32), spacing=(5.0, 5.0, 10.0), seed=4)
    volume = tmp_path / "v.nii.gz"
    save_nifti(case.image, volume)
    out = tmp_path / "d.json"
    assert main(["describe", str(volume), "--model", str(folder), "--out", str(out), "--n-slices", "2"]) == 0
    data = json.loads(out.read_text())
    assert len(data["slices"]) == 2 and "summary" in data
    assert main(["describe", str(volume), "--model", str(folder), "--out", str(out)]) == 2
    assert "output exists" in capsys.readouterr().err
    assert main(["describe", str(tmp_path / "missing.nii.gz"), "--model", str(folder)]) == 2
    assert main(["describe", str(volume), "--model", str(tmp_path)]) == 2
    assert "not a slice reader folder" in capsys.readouterr().err


def test_vision_tower_starts_from_the_slice_clip(tiny):
    from medgen.pipelines.default_model import default_model_path
    from medgen.slices.clip import SliceCLIP
    from medgen.text import TextEncoder

    texts = corpus(tiny[3], 5)
    reader = SliceReader.new(texts, image_size=64, vision=TINY_VISION, text=TINY_TEXT, vocab_size=200)
    clip = SliceCLIP(TextEncoder.from_pretrained(str(default_model_path() / "text_encoder")), vision=TINY_VISION,
                     image_size=64)
    reader.init_vision_from_clip(clip)
    for a, b in zip(reader.model.model.vision_tower.state_dict().values(), clip.heads.vision.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert reader.config["vision_init"] == "slice CLIP"
    other = SliceCLIP(TextEncoder.from_pretrained(str(default_model_path() / "text_encoder")), vision=TINY_VISION,
                      image_size=32)
    with pytest.raises(ValueError, match="another configuration"):
        reader.init_vision_from_clip(other)


def test_second_opinion_scores_reader_and_analyzer_against_truth_and_each_other(tiny):
    from types import SimpleNamespace

    from medgen.evaluation.second_opinion import second_opinion, second_opinion_markdown

    cases, generated = [], {}
    for i, findings in enumerate([Findings([Lesion("right_upper", 32.0, 0.9)]), Findings()]):
        case = make_phantom(findings, shape=64, spacing=5.0, seed=20 + i)
        cases.append(SimpleNamespace(findings=case.findings))
        generated[(i, 3)] = case.image
        generated[(i, 4)] = case.image  # a second seed: only the first seed is read
    out = second_opinion(tiny[0], cases, generated, n_slices=2)
    assert out["n"] == 2 and out["seed"] == 3
    assert out["analyzer_vs_truth"]["lesion"] == 1.0 and out["analyzer_vs_truth"]["effusion"] == 1.0
    reader_right = out["reader_vs_truth"]["lesion"]
    # on real phantoms the analyzer is right, so agreeing with it is being right
    assert out["agreement"]["lesion"] == reader_right
    assert second_opinion_markdown(out)[0] == "## Second opinion: slice reader beside the HU analyzer"
