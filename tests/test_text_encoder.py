"""medgen.text.encoder / dual: offline loading, pooling, truncation, cache, trainable layers, save/load."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from medgen.errors import InputFileError, ModelNotFoundError
from medgen.text import DualTextEncoder, TextEncoder, TextEncoding, load_text_encoder

REPORTS = [
    "A 12 mm ground-glass nodule in the right upper lobe.",
    "Normal chest CT.",
    "右肺上叶见一磨玻璃结节，直径约12毫米。",
]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return TextEncoder.from_pretrained(tiny_bert_dir, max_length=32)


def test_shapes_mask_and_device(encoder):
    out = encoder(REPORTS)
    lengths = [len(ids) for ids in encoder.tokenizer(REPORTS)["input_ids"]]
    assert encoder.hidden_size == 32
    assert out.token_states.shape == (3, max(lengths), 32)
    assert out.attention_mask.dtype == torch.long
    assert out.attention_mask.sum(1).tolist() == lengths
    assert out.pooled.shape == (3, 32)
    assert out.token_states.device == out.pooled.device == encoder.device
    # padded positions carry zero states
    assert torch.all(out.token_states[out.attention_mask == 0] == 0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_ignores_padding(tiny_bert_dir, pooling):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, pooling=pooling, cache_size=0)
    short = "Normal chest CT."
    alone = enc([short])
    batched = enc([short, REPORTS[0] + " " + REPORTS[0]])
    assert batched.attention_mask[0].sum() < batched.attention_mask.shape[1]  # really padded
    torch.testing.assert_close(batched.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)
    n = alone.token_states.shape[1]
    torch.testing.assert_close(batched.token_states[0, :n], alone.token_states[0], atol=1e-5, rtol=1e-5)


def test_mean_pooling_is_mean_of_real_tokens(tiny_bert_dir):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, cache_size=0)
    out = enc(REPORTS[:2])
    n = int(out.attention_mask[1].sum())
    torch.testing.assert_close(out.pooled[1], out.token_states[1, :n].mean(0))


def test_truncation_warns_once_per_call_with_token_count(tiny_bert_dir):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, max_length=8)
    long_texts = [REPORTS[0], REPORTS[0] + " " + REPORTS[0]]
    n_tokens = len(enc.tokenizer(long_texts[1])["input_ids"])
    with pytest.warns(UserWarning) as record:
        out = enc(long_texts)
    messages = [str(w.message) for w in record if "max_length" in str(w.message)]
    assert len(messages) == 1
    assert f"{n_tokens} tokens" in messages[0] and "2 of 2" in messages[0]
    assert out.token_states.shape[1] == 8
    with pytest.warns(UserWarning, match=f"{n_tokens} tokens"):  # cached reports still warn
        enc(long_texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc(["Normal chest CT."])


def test_max_length_beyond_positions_rejected(tiny_bert_dir):
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder.from_pretrained(tiny_bert_dir, max_length=10_000)


def test_cache_hits_identical_and_independent(tiny_bert_dir):
    enc = TextEncoder.from_pretrained(tiny_bert_dir)
    first = enc(REPORTS)
    assert enc.cache_info()[:3] == (0, 3, 3)
    second = enc(list(reversed(REPORTS)) + [REPORTS[0]])
    info = enc.cache_info()
    assert (info.hits, info.misses) == (4, 3)
    torch.testing.assert_close(second.pooled[0], first.pooled[2], atol=0, rtol=0)
    torch.testing.assert_close(second.pooled[3], first.pooled[0], atol=0, rtol=0)
    second.pooled.add_(1.0)
    second.token_states.add_(1.0)  # callers may modify their tensors: the cache is not touched
    torch.testing.assert_close(enc(REPORTS).pooled, first.pooled, atol=0, rtol=0)


def test_cache_evicts_least_recently_used(tiny_bert_dir):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, cache_size=2)
    enc([REPORTS[0]])
    enc([REPORTS[1]])
    enc([REPORTS[0]])  # hit: REPORTS[1] is now the oldest
    enc([REPORTS[2]])  # evicts REPORTS[1]
    assert enc.cache_info().size == 2
    enc([REPORTS[0]])
    hits = enc.cache_info().hits
    enc([REPORTS[1]])
    assert enc.cache_info().hits == hits  # was evicted: a miss


def test_cache_unused_while_trainable(tiny_bert_dir):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, trainable_layers=1)
    enc(REPORTS)
    out = enc(REPORTS)
    assert enc.cache_info().hits == 0 and enc.cache_info().size == 0
    out.pooled.sum().backward()
    top = enc.model.encoder.layer[-1]
    assert all(p.grad is not None for p in top.parameters())


@pytest.mark.parametrize("n", [0, 1, 2])
def test_trainable_layers_flags_exactly_top_n(tiny_bert_dir, n):
    enc = TextEncoder.from_pretrained(tiny_bert_dir)
    enc.set_trainable_layers(n)
    trainable = {name for name, p in enc.model.named_parameters() if p.requires_grad}
    expected = {name for name, _ in enc.model.named_parameters()
                if any(name.startswith(f"encoder.layer.{i}.") for i in range(2 - n, 2))}
    assert trainable == expected
    assert (len(trainable) > 0) == (n > 0)


def test_trainable_layers_out_of_range(tiny_bert_dir):
    with pytest.raises(ValueError, match=r"trainable_layers.*\[0, 2\].*got 3"):
        TextEncoder.from_pretrained(tiny_bert_dir, trainable_layers=3)


def test_frozen_encoder_stays_in_eval_mode(tiny_bert_dir):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, cache_size=0)
    enc.train()
    assert not enc.model.training  # no dropout: outputs are deterministic
    torch.testing.assert_close(enc(REPORTS).pooled, enc(REPORTS).pooled, atol=0, rtol=0)
    enc.set_trainable_layers(1)
    enc.train()
    assert enc.model.training


def test_empty_encoding_is_encoding_of_empty_text(encoder):
    null = encoder.empty_encoding(3)
    ref = encoder([""])
    assert null.token_states.shape == (3, 2, encoder.hidden_size)  # [CLS] [SEP]
    torch.testing.assert_close(null.pooled, ref.pooled.expand(3, -1))
    assert null.attention_mask.tolist() == [[1, 1]] * 3


def test_text_encoding_cat_pads_to_longest(encoder):
    both = TextEncoding.cat([encoder(REPORTS), encoder.empty_encoding(2)])
    assert both.token_states.shape[0] == 5 and both.attention_mask[3:].sum(1).tolist() == [2, 2]


def test_chinese_text_has_no_unknown_tokens(encoder):
    tokens = encoder.tokenizer.tokenize(REPORTS[2])
    assert encoder.tokenizer.unk_token not in tokens
    assert "肺" in tokens and "结" in tokens  # one token per character


def test_missing_folder_error_names_path_in_one_line(tmp_path):
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(ModelNotFoundError) as info:
        TextEncoder.from_pretrained(missing)
    message = str(info.value)
    assert str(missing) in message and "\n" not in message
    assert "huggingface-cli download" in message and "medgen text pretrain" in message


def test_missing_hub_model_error_names_hf_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        TextEncoder.from_pretrained("emilyalsentzer/Bio_ClinicalBERT")
    message = str(info.value)
    assert str(tmp_path / "hf_home" / "hub") in message and "\n" not in message
    assert "huggingface-cli download emilyalsentzer/Bio_ClinicalBERT" in message
    assert "--revision refs/pr/6" in message  # the hub revision with safetensors weights


def test_corrupt_folders_give_clear_errors(tiny_bert_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError, match="no config.json"):
        TextEncoder.from_pretrained(empty)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputFileError, match="cannot load the text encoder") as info:
        TextEncoder.from_pretrained(broken)
    assert str(broken) in str(info.value)


def test_pickle_weights_are_refused(tiny_bert_dir, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputFileError, match="safetensors only") as info:
        TextEncoder.from_pretrained(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_bio_clinicalbert_keeps_case(tiny_bert_dir, tmp_path):
    folder = tmp_path / "Bio_ClinicalBERT"
    shutil.copytree(tiny_bert_dir, folder)
    normalize = lambda enc: enc.tokenizer.backend_tokenizer.normalizer.normalize_str("Right Lung")  # noqa: E731
    assert normalize(TextEncoder.from_pretrained(folder)) == "Right Lung"
    assert normalize(TextEncoder.from_pretrained(folder, do_lower_case=True)) == "right lung"
    assert normalize(TextEncoder.from_pretrained(tiny_bert_dir)) == "right lung"  # its own setting


def test_save_load_round_trip(tiny_bert_dir, tmp_path):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, max_length=24, pooling="cls", trainable_layers=1)
    enc.save_pretrained(tmp_path / "saved")
    names = {p.name for p in (tmp_path / "saved").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "medgen_text.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    loaded = TextEncoder.from_pretrained(tmp_path / "saved")
    assert (loaded.max_length, loaded.pooling, loaded.trainable_layers) == (24, "cls", 0)  # loads frozen
    enc.set_trainable_layers(0)  # eval mode (no dropout) for the comparison
    a, b = enc(REPORTS), loaded(REPORTS)
    torch.testing.assert_close(a.token_states, b.token_states, atol=0, rtol=0)
    torch.testing.assert_close(a.pooled, b.pooled, atol=0, rtol=0)


def test_dual_encoder_shapes_and_round_trip(tiny_bert_dir, tmp_path):
    from medgen.text.tiny import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other", hidden_size=16, num_layers=1, num_heads=2, seed=1)
    dual = DualTextEncoder(TextEncoder.from_pretrained(tiny_bert_dir, max_length=8),
                           TextEncoder.from_pretrained(other, max_length=32))
    assert dual.hidden_size == 48
    with pytest.warns(UserWarning, match="max_length=8"):
        out = dual(REPORTS)
    assert out.token_states.shape[::2] == (3, 48) and out.pooled.shape == (3, 48)
    assert out.token_states.shape[1] == max(len(i) for i in dual.second.tokenizer(REPORTS)["input_ids"])
    assert out.attention_mask.shape == out.token_states.shape[:2]
    null = dual.empty_encoding(2)
    assert null.token_states.shape == (2, 2, 48)

    dual.save_pretrained(tmp_path / "dual")
    loaded = load_text_encoder({"name_or_path": str(tmp_path / "dual")})
    assert isinstance(loaded, DualTextEncoder)
    with pytest.warns(UserWarning):
        torch.testing.assert_close(loaded(REPORTS).pooled, out.pooled, atol=0, rtol=0)


def test_load_text_encoder_config(tiny_bert_dir):
    enc = load_text_encoder({"name_or_path": str(tiny_bert_dir), "max_length": 16, "pooling": "cls"})
    assert isinstance(enc, TextEncoder) and (enc.max_length, enc.pooling) == (16, "cls")
    dual = load_text_encoder({"name_or_path": str(tiny_bert_dir), "second": {"name_or_path": str(tiny_bert_dir)}})
    assert isinstance(dual, DualTextEncoder) and dual.hidden_size == 64
    with pytest.raises(ValueError, match="max_lenght"):
        load_text_encoder({"name_or_path": str(tiny_bert_dir), "max_lenght": 16})
