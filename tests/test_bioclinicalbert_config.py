"""configs/phantom-64-bioclinicalbert.yaml with a local stand-in for Bio_ClinicalBERT (no network).

The stand-in is the session's tiny BERT copied into a fake Hugging Face cache
(``$HF_HOME/hub/models--emilyalsentzer--Bio_ClinicalBERT/snapshots/<rev>/`` + ``refs/main``), so the config's
hub id resolves offline exactly as the real model would; the networks are shrunk to the tiny test sizes.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from medgen.config import load_config
from medgen.errors import ModelNotFoundError
from medgen.text import TextEncoder, load_text_encoder

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "phantom-64-bioclinicalbert.yaml"
BASE = ROOT / "configs" / "phantom-64.yaml"
TINY = ROOT / "configs" / "tiny.yaml"
HUB_ID = "emilyalsentzer/Bio_ClinicalBERT"
REVISION = "0123456789abcdef0123456789abcdef01234567"  # a fake commit hash


def fake_hf_cache(hf_home: Path, model_dir: Path, ref: str = "main") -> Path:
    """Lay out `model_dir` as the cached snapshot of HUB_ID under `hf_home`; return the snapshot folder."""
    repo = hf_home / "hub" / "models--emilyalsentzer--Bio_ClinicalBERT"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(model_dir, snapshot)
    (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(REVISION)
    return snapshot


def use_hf_home(mp: pytest.MonkeyPatch, hf_home: Path) -> None:
    mp.delenv("HF_HUB_CACHE", raising=False)  # it would take precedence over HF_HOME
    mp.setenv("HF_HOME", str(hf_home))
    mp.setenv("HF_HUB_OFFLINE", "1")


def tiny_overrides(out: Path, manifest) -> list[str]:
    """Shrink the config to the tiny test sizes (tiny.yaml networks, 16^3 at 20 mm, 1-2 steps per stage).

    The UNet's zero-initialised output layers pass no gradient back to the text encoder on the first LDM
    step, so stage 1 takes 2 steps before stage 2 trains the top text layer (as in test_training.py).
    """
    tiny = yaml.safe_load(TINY.read_text())
    return [f"output_dir={out}", f"data.manifest={manifest}", "data.shape=[16,16,16]", "data.spacing=[20,20,20]",
            *[f"{k}={json.dumps(tiny[k])}" for k in ("autoencoder", "discriminator", "unet")],
            "train_vae.steps=2", "train_vae.batch_size=2", "train_vae.patch_size=8", "train_vae.full_volume_steps=1",
            "train_vae.validate_every=1000", "train_vae.scale_samples=2",
            "train_ldm.batch_size=2", "train_ldm.validate_every=1000", "train_ldm.warmup=1", "train_ldm.ema_decay=0.5",
            "train_ldm.stages.0.steps=2", "train_ldm.stages.1.steps=1", "train_ldm.stages.1.text_lr=1.0e-2",
            "scheduler.num_inference_steps=2"]


def normalize(encoder) -> str:
    return encoder.tokenizer.backend_tokenizer.normalizer.normalize_str("Right Lung")


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory, tiny_bert_dir):
    """HF_HOME with the tiny BERT as the cached Bio_ClinicalBERT snapshot (set for this module's tests)."""
    root = tmp_path_factory.mktemp("hub_cache")
    snapshot = fake_hf_cache(root / "hf_home", Path(tiny_bert_dir))
    with pytest.MonkeyPatch.context() as mp:
        use_hf_home(mp, root / "hf_home")
        mp.chdir(root)  # no folder named like the hub id can shadow it
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny networks; the cores are shared
        yield snapshot
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(hf_cache, tiny_manifest, tmp_path_factory):
    """`medgen train all` through the Python API: VAE (2 steps), then the LDM stages (2 + 1 steps)."""
    from medgen.training.ldm import train_ldm
    from medgen.training.vae import train_vae

    out = tmp_path_factory.mktemp("run") / "phantom-64-bioclinicalbert"
    config = load_config(CONFIG, tiny_overrides(out, tiny_manifest))
    assert config["text_encoder"]["name_or_path"] == HUB_ID  # the overrides keep the hub id
    autoencoder = train_vae(config, device="cpu", progress=False)
    pipeline = train_ldm(config, device="cpu", progress=False)
    return config, autoencoder, pipeline


def test_config_is_phantom_64_with_bioclinicalbert():
    config, base = load_config(CONFIG), load_config(BASE)
    assert (config["name"], config["output_dir"]) == ("phantom-64-bioclinicalbert", "runs/phantom-64-bioclinicalbert")
    assert config["text_encoder"] == {"name_or_path": HUB_ID, "max_length": 512, "pooling": "mean",
                                      "trainable_layers": 0}
    assert [s.get("trainable_text_layers") for s in config["train_ldm"]["stages"]] == [0, 1]
    for key in ("name", "output_dir", "text_encoder", "_config_path"):
        config.pop(key), base.pop(key)
    assert config == base  # everything else as in phantom-64.yaml


def test_hub_id_resolves_to_the_cached_snapshot_offline(hf_cache, tiny_bert_dir):
    config = load_config(CONFIG)
    encoder = load_text_encoder(config["text_encoder"])
    hidden = json.loads((hf_cache / "config.json").read_text())["hidden_size"]
    assert isinstance(encoder, TextEncoder) and encoder.hidden_size == hidden == 32
    assert (encoder.max_length, encoder.pooling, encoder.frozen) == (512, "mean", True)
    snapshot_weights = load_file(hf_cache / "model.safetensors")
    model_weights = encoder.model.state_dict()
    assert snapshot_weights and all(torch.equal(model_weights[k], v) for k, v in snapshot_weights.items())

    report = " ".join(["A 12 mm ground-glass nodule in the right upper lobe."] * 16)
    n_tokens = len(encoder.tokenizer(report)["input_ids"])
    assert 192 < n_tokens <= 512  # phantom-64's 192 tokens would truncate it; 512 does not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = encoder([report, "Normal chest CT."])
    assert out.token_states.shape == (2, n_tokens, hidden) and out.pooled.shape == (2, hidden)
    assert torch.isfinite(out.token_states).all()

    # Bio_ClinicalBERT is cased: its name keeps case although the stand-in's own tokenizer lowercases
    assert normalize(encoder) == "Right Lung"
    assert normalize(TextEncoder.from_pretrained(hf_cache)) == "Right Lung"  # the snapshot path names it too
    assert normalize(TextEncoder.from_pretrained(tiny_bert_dir)) == "right lung"


def test_snapshot_known_only_as_refs_pr_6_is_found_once_refs_main_names_it(tmp_path, tiny_bert_dir, monkeypatch):
    """`huggingface-cli download ... --revision refs/pr/6` writes refs/refs/pr/6 only (see the config's comment)."""
    fake_hf_cache(tmp_path / "hf_home", Path(tiny_bert_dir), ref="refs/pr/6")
    use_hf_home(monkeypatch, tmp_path / "hf_home")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="refs/pr/6"):
        TextEncoder.from_pretrained(HUB_ID)
    refs = tmp_path / "hf_home" / "hub" / "models--emilyalsentzer--Bio_ClinicalBERT" / "refs"
    shutil.copy(refs / "refs" / "pr" / "6", refs / "main")
    assert TextEncoder.from_pretrained(HUB_ID).hidden_size == 32


def test_train_all_writes_a_pipeline_that_generates(trained, hf_cache):
    from medgen.pipelines.text_to_volume import ReportToVolumePipeline

    config, autoencoder, pipeline = trained
    out = Path(config["output_dir"])
    assert autoencoder == out / "autoencoder" and pipeline == out / "pipeline"
    ldm_logs = [json.loads(line) for line in (out / "logs" / "ldm" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ldm_logs] == [1, 2, 3] and all(np.isfinite(r["ldm/loss"]) for r in ldm_logs)

    pipe = ReportToVolumePipeline.from_pretrained(pipeline)
    assert pipe.config["name"] == "phantom-64-bioclinicalbert"
    text = pipe.text_encoder
    assert (text.hidden_size, text.max_length, text.frozen) == (32, 512, True)
    assert normalize(text) == "Right Lung"  # the exported tokenizer stays cased
    assert pipe.unet.config["cross_attention_dim"] == 32
    # stage 2 fine-tuned the top BERT layer only (tiny stand-in: layers 0 and 1)
    snapshot = load_file(hf_cache / "model.safetensors")
    exported = load_file(pipeline / "text_encoder" / "model.safetensors")
    changed = {k for k, v in snapshot.items() if not torch.equal(exported[k], v)}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)

    result = pipe("Right upper lobe solid nodule.", density=0.9, seed=0, progress=False)
    volume = result.volume
    assert volume.shape == (16, 16, 16) and volume.spacing == (20.0, 20.0, 20.0)
    assert np.isfinite(volume.array).all() and -1024.0 <= volume.array.min() <= volume.array.max() <= 1024.0
    assert tuple(result.latent.shape) == (4, 8, 8, 8)
    assert result.provenance["num_inference_steps"] == 2


def test_without_the_cache_the_config_fails_naming_the_cache(trained, tmp_path, monkeypatch):
    from medgen.training.ldm import train_ldm

    config = trained[0]
    use_hf_home(monkeypatch, tmp_path / "empty_home")
    with pytest.raises(ModelNotFoundError) as info:
        train_ldm(config, device="cpu", progress=False)
    message = str(info.value)
    assert HUB_ID in message and str(tmp_path / "empty_home" / "hub") in message and "\n" not in message
    assert "--revision refs/pr/6" in message
