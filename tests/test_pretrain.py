"""medgen.text.pretrain: WordPiece vocabulary, BERT masking, a short MLM run, `medgen text pretrain`."""

from __future__ import annotations

import json

import pytest
import torch

from medgen.errors import OutputExistsError
from medgen.text import TextEncoder
from medgen.text.pretrain import mask_tokens, pretrain_compact_bert, train_wordpiece_tokenizer
from medgen.text.tiny import RADIOLOGY_CORPUS

TINY = {"vocab_size": 600, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_length": 48, "batch_size": 8}


def test_vocabulary_covers_english_and_chinese():
    tok = train_wordpiece_tokenizer(list(RADIOLOGY_CORPUS), vocab_size=600)
    for text in ("Small left pleural effusion.", "左侧少量胸腔积液。"):
        assert tok.unk_token not in tok.tokenize(text)
    assert tok.tokenize("胸腔") == ["胸", "腔"]


def test_common_chinese_characters_join_the_vocabulary():
    unseen = "锐"  # not in the corpus
    assert not any(unseen in text for text in RADIOLOGY_CORPUS)
    plain = train_wordpiece_tokenizer(list(RADIOLOGY_CORPUS), vocab_size=600)
    wide = train_wordpiece_tokenizer(list(RADIOLOGY_CORPUS), vocab_size=600, common_chinese=True)
    assert plain.tokenize(unseen) == [plain.unk_token]
    assert wide.tokenize(unseen) == [unseen]
    assert len(wide) > 3755


def test_mask_tokens_picks_at_least_one_token():
    ids = torch.tensor([[2, 50, 3]])
    special = torch.tensor([[True, False, True]])
    _, labels = mask_tokens(ids, special, mask_id=4, vocab_size=100, generator=torch.Generator().manual_seed(0),
                            prob=1e-9)
    assert labels.tolist() == [[-100, 50, -100]]


def test_mask_tokens_follows_80_10_10():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (64, 512), generator=generator)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    masked, labels = mask_tokens(ids, special, mask_id=4, vocab_size=1000, generator=generator)
    picked = labels != -100
    assert not picked[:, 0].any()
    assert torch.equal(labels[picked], ids[picked]) and torch.equal(masked[~picked], ids[~picked])
    share = picked.float().mean().item()
    assert 0.14 < share < 0.16
    as_mask = (masked[picked] == 4).float().mean().item()
    kept = (masked[picked] == ids[picked]).float().mean().item()
    assert 0.78 < as_mask < 0.82 and 0.08 < kept < 0.12 + 0.001  # random ids may hit the original


def test_short_pretraining_lowers_loss_and_loads(tmp_path):
    out = pretrain_compact_bert(list(RADIOLOGY_CORPUS) * 4, tmp_path / "enc", steps=30, lr=2e-3, progress=False,
                                **TINY)
    record = json.loads((out / "medgen_text.json").read_text())["pretraining"]
    assert record["mlm_loss_end"] < record["mlm_loss_start"] - 0.2
    enc = TextEncoder.from_pretrained(out)
    assert enc.max_length == 48 and enc.hidden_size == 32
    assert enc.tokenizer.unk_token not in enc.tokenizer.tokenize("右肺上叶磨玻璃结节，边缘锐利 ground-glass nodule")
    assert enc(["Normal chest CT.", "双肺纹理清晰。"]).pooled.shape == (2, 32)
    assert not list(tmp_path.glob(".enc.*"))  # no temporary folder left behind


def test_existing_output_refused_before_training(tmp_path):
    (tmp_path / "enc").mkdir()
    with pytest.raises(OutputExistsError):
        pretrain_compact_bert(["x"], tmp_path / "enc", steps=10_000, progress=False, **TINY)


def test_cli_pretrains_on_train_split_only(tmp_path, capsys):
    from medgen.cli.main import main

    rows = [{"id": f"c{i}", "image": f"images/c{i}.nii.gz", "report": text, "language": "zh" if ord(text[0]) > 127 else "en",
             "split": "train" if i % 3 else "val"} for i, text in enumerate(RADIOLOGY_CORPUS)]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    argv = ["text", "pretrain", "--manifest", str(manifest), "--out", str(tmp_path / "enc"), "--steps", "3",
            "--vocab-size", "500", "--hidden-size", "16", "--layers", "1", "--heads", "2", "--max-length", "32",
            "--batch-size", "4", "--quiet"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "enc" / "medgen_text.json").read_text())["pretraining"]
    assert record["corpus_texts"] == sum(r["split"] == "train" for r in rows)
    assert TextEncoder.from_pretrained(tmp_path / "enc").hidden_size == 16
    assert main(argv) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
