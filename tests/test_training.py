"""Training: config loading, EMA / LR / clipping maths, condition dropout, VAE and LDM runs, resume, kill -9.

Integration tests use the tiny config on the session's tiny dataset, resampled to 16^3 at 20 mm (fast).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from medgen.config import load_config, resolve_path
from medgen.engine.checkpoint import latest_checkpoint, load_checkpoint
from medgen.engine.distributed import ResumableSampler
from medgen.engine.optim import cosine_warmup_factor, set_learning_rates
from medgen.engine.state import EMA, GradClipper
from medgen.errors import InputFileError
from medgen.training.ldm import apply_condition_dropout, sample_dropout_masks

# The tiny config keeps 64 tokens; most phantom reports are longer (the encoder warns each time).
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than max_length:UserWarning")
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
FAST = ["data.shape=[16,16,16]", "data.spacing=[20,20,20]", "train_vae.validate_every=1000",
        "train_ldm.validate_every=1000"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one intra-op thread is faster, and far faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(out: Path, manifest, text_dir=None, *extra: str) -> dict:
    overrides = [f"output_dir={out}", f"data.manifest={manifest}", *FAST, *extra]
    if text_dir is not None:
        overrides.append(f"text_encoder.name_or_path={text_dir}")
    return load_config(TINY, overrides)


# ------------------------------------------------------------------------------------------ config
def test_load_config_overrides_and_errors(tmp_path):
    config = load_config(TINY, ["train_ldm.batch_size=4", "train_ldm.stages.1.steps=7", "train_ldm.grad_clip=null",
                                "new.section.key=[1, 2]"])
    assert config["train_ldm"]["batch_size"] == 4 and config["train_ldm"]["stages"][1]["steps"] == 7
    assert config["train_ldm"]["grad_clip"] is None and config["new"]["section"]["key"] == [1, 2]
    with pytest.raises(InputFileError, match="train_ldm.drop_text"):
        load_config(TINY, ["train_ldm.drop_text=1.5"])
    with pytest.raises(InputFileError, match="missing required section `unet`"):
        load_config(TINY, ["unet=null"])
    with pytest.raises(ValueError, match="not an index"):
        load_config(TINY, ["train_ldm.stages.5.steps=1"])
    with pytest.raises(InputFileError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    # relative paths: the cwd if they exist there, else the repository holding the config
    assert resolve_path("configs/tiny.yaml", config) == TINY
    assert resolve_path("runs/x", config) == TINY.parents[1] / "runs" / "x" or Path.cwd() == TINY.parents[1]


# ------------------------------------------------------------------------------------- state maths
def test_ema_math_registration_and_swap():
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    ema = EMA(0.9)
    ema.register([("p", p)])
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()
    ema.update()
    # shadow_n = 0.9^n * shadow_0 + (1 - 0.9^n) * 1
    assert torch.allclose(ema.shadow["p"], torch.tensor([0.19, 0.81 * 10 + 0.19]))
    q = torch.nn.Parameter(torch.tensor([5.0]))
    ema.register([("q", q)])  # joins later: its shadow starts at its value
    ema.update()
    assert torch.allclose(ema.shadow["q"], torch.tensor([5.0]))
    with ema.applied():
        assert torch.allclose(p, ema.shadow["p"])
    assert torch.equal(p.detach(), torch.tensor([1.0, 1.0]))  # restored
    other = EMA(0.5)
    other.register([("p", p), ("q", q)])
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and torch.equal(other.shadow["p"], ema.shadow["p"])


def test_cosine_warmup_values_and_group_warmup():
    values = [cosine_warmup_factor(s, 4, 10) for s in range(11)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and math.isclose(values[7], 0.5) and math.isclose(values[10], 0.0, abs_tol=1e-12)
    assert all(a >= b for a, b in zip(values[3:], values[4:], strict=False))  # non-increasing after warm-up
    assert math.isclose(cosine_warmup_factor(10, 4, 10, min_ratio=0.1), 0.1)
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "base_lr": 1.0, "warmup_start": 0},
                             {"params": [torch.nn.Parameter(torch.zeros(1))], "base_lr": 0.1, "warmup_start": 6}])
    set_learning_rates(opt, 7, 4, 10)
    assert math.isclose(opt.param_groups[0]["lr"], 0.5)
    assert math.isclose(opt.param_groups[1]["lr"], 0.1 * (2 / 4) * 0.5)  # own warm-up from step 6


def _param_with_grad(norm: float) -> torch.nn.Parameter:
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([norm, 0.0, 0.0, 0.0])
    return p


def test_adaptive_clip_threshold_follows_recent_norms():
    clip = GradClipper({"mode": "adaptive", "window": 5, "factor": 2.0, "min_history": 3})
    assert clip.threshold() == math.inf
    for norm in (1.0, 2.0, 3.0, 4.0, 5.0):
        clip([_param_with_grad(norm)])
    assert clip.threshold() == 2.0 * 3.0  # factor x median of the window
    spike = _param_with_grad(100.0)
    assert clip([spike]) == pytest.approx(100.0)
    assert spike.grad.norm().item() == pytest.approx(6.0, rel=1e-5)
    assert clip.history[-1] == pytest.approx(6.0) and clip.num_clipped == 1  # the spike enters clipped
    assert list(clip.history) == pytest.approx([2.0, 3.0, 4.0, 5.0, 6.0])  # window of 5
    mean = GradClipper({"mode": "adaptive", "window": 3, "factor": 1.5, "statistic": "mean", "min_history": 1})
    for norm in (1.0, 2.0, 6.0):
        mean([_param_with_grad(norm)])
    assert list(mean.history) == [1.0, 1.5, 1.875]  # 2 and 6 enter clipped to 1.5 x the running mean
    assert mean.threshold() == pytest.approx(1.5 * (1.0 + 1.5 + 1.875) / 3)
    fixed, off = GradClipper({"mode": "fixed", "max_norm": 1.0}), GradClipper(None)
    p = _param_with_grad(10.0)
    fixed([p])
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    q = _param_with_grad(10.0)
    off([q])
    assert q.grad.norm().item() == 10.0 and off.threshold() == math.inf


def test_condition_dropout_masks_and_replacement():
    from medgen.text.encoder import TextEncoding

    g = torch.Generator().manual_seed(0)
    text_all, dens_all = sample_dropout_masks(8, 1.0, 1.0, g)
    text_none, dens_none = sample_dropout_masks(8, 0.0, 0.0, g)
    assert text_all.all() and dens_all.all() and not text_none.any() and not dens_none.any()
    text_half, dens_half = sample_dropout_masks(2000, 0.3, 0.6, g)
    assert 0.25 < text_half.float().mean() < 0.35 and 0.55 < dens_half.float().mean() < 0.65
    assert abs(torch.corrcoef(torch.stack([text_half.float(), dens_half.float()]))[0, 1]) < 0.1  # independent

    b = 4
    enc = TextEncoding(torch.randn(b, 5, 3), torch.tensor([[1, 1, 1, 0, 0]] * b), torch.randn(b, 3))
    empty = TextEncoding(torch.randn(1, 2, 3).expand(b, -1, -1), torch.ones(b, 2, dtype=torch.long), torch.randn(1, 3).expand(b, -1))
    density = torch.tensor([0.1, 0.5, math.nan, 0.9])
    out, dens = apply_condition_dropout(enc, empty, density, text_all[:b], dens_all[:b])
    assert torch.isnan(dens).all()
    assert torch.equal(out.token_states[:, :2], empty.token_states) and not out.token_states[:, 2:].any()
    assert torch.equal(out.attention_mask, torch.tensor([[1, 1, 0, 0, 0]] * b)) and torch.equal(out.pooled, empty.pooled)
    out, dens = apply_condition_dropout(enc, empty, density, text_none[:b], dens_none[:b])
    assert torch.equal(out.token_states, enc.token_states) and torch.equal(dens[[0, 1, 3]], density[[0, 1, 3]])
    mixed = torch.tensor([True, False, True, False])
    out, dens = apply_condition_dropout(enc, empty, density, mixed, ~mixed)
    assert torch.equal(out.pooled[1], enc.pooled[1]) and torch.equal(out.pooled[0], empty.pooled[0])
    assert torch.isnan(dens[[1, 2, 3]]).all() and dens[0] == density[0]


def test_resumable_sampler_shards_and_offsets():
    shards = [ResumableSampler(7, rank=r, world_size=2, seed=3) for r in range(2)]
    for s in shards:
        s.set_epoch(1)
    a, b = shards[0].indices(), shards[1].indices()
    assert len(a) == len(b) == 4 and set(a) | set(b) == set(range(7))
    shards[0].set_epoch(1, start=3)
    assert list(shards[0]) == a[3:] and len(shards[0]) == 1
    shards[0].set_epoch(2)
    assert shards[0].indices() != a  # a new permutation each epoch


# --------------------------------------------------------------------------------------- VAE runs
@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, tiny_manifest):
    """3 VAE steps (adversarial from step 1, validation PNG at step 3)."""
    from medgen.training.vae import VAETrainer

    out = tmp_path_factory.mktemp("vae_run")
    config = tiny_config(out, tiny_manifest, None, "train_vae.steps=3", "train_vae.adv_start=1",
                         "train_vae.validate_every=3", "train_vae.checkpoint_every=2")
    trainer = VAETrainer(config, device="cpu", progress=False)
    init = {k: v.clone() for k, v in trainer.autoencoder.state_dict().items()}
    init_d = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    path = trainer.run()
    return config, trainer, init, init_d, path


def test_vae_steps_train_every_network_and_write_outputs(vae_run):
    import json

    config, trainer, init, init_d, path = vae_run
    out = Path(config["output_dir"])
    logs = [json.loads(line) for line in (out / "logs" / "vae" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3]
    assert all(math.isfinite(r["vae/loss"]) for r in logs) and "vae/disc_loss" in logs[1] and "vae/disc_loss" not in logs[0]
    changed = [k for k, v in trainer.autoencoder.state_dict().items() if not torch.equal(v, init[k])]
    assert len(changed) > 0.9 * len(init)
    assert any(not torch.equal(v, init_d[k]) for k, v in trainer.discriminator.state_dict().items())
    saved = json.loads((path / "config.json").read_text())
    assert math.isfinite(saved["scale_factor"]) and saved["scale_factor"] > 0 and saved["channels"] == [8, 16]
    assert (out / "samples" / "vae" / "step-00000003.png").is_file()
    assert sorted(p.name for p in (out / "checkpoints" / "vae").glob("step-*")) == ["step-00000002", "step-00000003"]


def _final_state(path: Path):
    ckpt = load_checkpoint(path)
    return ckpt.weights, {k: v for k, v in ckpt.state.items() if k != "rng"}


def _assert_equal_nested(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert sorted(map(str, a)) == sorted(map(str, b)), where
        for k in a:
            _assert_equal_nested(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where


def test_vae_resume_is_bit_for_bit(tmp_path, tiny_manifest):
    from medgen.training.vae import VAETrainer, _image

    extra = ("train_vae.steps=4", "train_vae.adv_start=1", "train_vae.checkpoint_every=2",
             "train_vae.grad_clip={mode: adaptive, window: 4, factor: 1.5, min_history: 1}")
    straight = tiny_config(tmp_path / "a", tiny_manifest, None, *extra)
    VAETrainer(straight, device="cpu", progress=False).run()

    split = tiny_config(tmp_path / "b", tiny_manifest, None, *extra)
    first = VAETrainer(split, device="cpu", progress=False)
    batches = iter(first.stream)
    for _ in range(2):
        first.train_step(_image(next(batches), first.device))
    first.save()
    del first, batches
    torch.manual_seed(1234)  # a fresh process would start from other RNG states
    resumed = VAETrainer(split, resume=True, device="cpu", progress=False)
    assert resumed.start_step == 2
    resumed.run()
    a = _final_state(tmp_path / "a" / "checkpoints" / "vae" / "step-00000004")
    b = _final_state(tmp_path / "b" / "checkpoints" / "vae" / "step-00000004")
    _assert_equal_nested(a, b)


def test_kill_9_mid_run_then_resume(tmp_path, tiny_manifest):
    """A training process killed with SIGKILL loses only the steps since its last complete checkpoint."""
    from medgen.training.vae import VAETrainer

    out = tmp_path / "run"
    argv = ["train", "vae", "--config", str(TINY), "--device", "cpu", "--quiet", "--set", f"output_dir={out}",
            "--set", f"data.manifest={tiny_manifest}", *[a for o in FAST for a in ("--set", o)],
            "--set", "train_vae.steps=100000", "--set", "train_vae.checkpoint_every=1", "--set", "train_vae.adv_start=0"]
    child = multiprocessing.get_context("fork").Process(target=_cli_child, args=(argv,))
    child.start()
    ckdir = out / "checkpoints" / "vae"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.is_alive():
        latest = latest_checkpoint(ckdir)
        if latest is not None and load_checkpoint(latest).step >= 3:
            break
        time.sleep(0.05)
    assert child.is_alive(), f"training process ended early (exit code {child.exitcode})"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL

    leftover = ckdir / ".step-00009999.deadbeef.part"  # as if killed while writing a checkpoint
    leftover.mkdir()
    (leftover / "autoencoder.safetensors").write_bytes(b"\x08\x00\x00")
    last = latest_checkpoint(ckdir)
    step = load_checkpoint(last).step
    config = tiny_config(out, tiny_manifest, None, f"train_vae.steps={step + 2}", "train_vae.checkpoint_every=1",
                         "train_vae.adv_start=0")
    trainer = VAETrainer(config, resume=True, device="cpu", progress=False)
    assert trainer.start_step == step
    _assert_equal_nested(trainer.autoencoder.state_dict(), load_checkpoint(last).weights["autoencoder"])
    trainer.run()
    assert load_checkpoint(latest_checkpoint(ckdir)).step == step + 2
    assert not leftover.exists()


def _cli_child(argv):
    torch.set_num_threads(1)  # forked from a process that used OpenMP threads
    from medgen.cli.main import main

    os._exit(main(argv))


# --------------------------------------------------------------------------------------- LDM runs
def _ldm_config(out: Path, vae_run, tiny_manifest, tiny_bert_dir, *extra: str) -> dict:
    shutil.copytree(vae_run[4], out / "autoencoder")
    return tiny_config(out, tiny_manifest, tiny_bert_dir, "train_ldm.stages=[{steps: 2, trainable_text_layers: 0}, "
                       "{steps: 2, trainable_text_layers: 1, text_lr: 1.0e-3}]", "train_ldm.drop_text=0.5",
                       "train_ldm.drop_density=0.5", "train_ldm.checkpoint_every=2",
                       "train_ldm.grad_clip={mode: adaptive, window: 4, factor: 1.5, min_history: 1}", *extra)


def test_ldm_stages_unfreeze_exactly_the_top_text_layer(tmp_path, vae_run, tiny_manifest, tiny_bert_dir):
    from medgen.training.ldm import LDMTrainer

    config = _ldm_config(tmp_path, vae_run, tiny_manifest, tiny_bert_dir)
    trainer = LDMTrainer(config, device="cpu", progress=False)
    text_init = {k: v.clone() for k, v in trainer.text.state_dict().items()}
    unet_init = {k: v.clone() for k, v in trainer.unet.state_dict().items()}
    batches = iter(trainer.stream)
    for _ in range(2):
        logs = trainer.train_step(next(batches))
        assert math.isfinite(logs["ldm/loss"]) and trainer.text.frozen and len(trainer.optimizer.param_groups) == 1
    trainer.train_step(next(batches))
    trainable = {n for n, p in trainer.text.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.encoder.layer.1.") for n in trainable)  # tiny BERT: layers 0, 1
    assert {n for n in trainer.text_trained} == trainable
    assert {id(p) for p in trainer.optimizer.param_groups[1]["params"]} == {
        id(p) for n, p in trainer.text.named_parameters() if n in trainable}
    assert trainer.optimizer.param_groups[1]["warmup_start"] == 2
    changed = {k for k, v in trainer.text.state_dict().items() if not torch.equal(v, text_init[k])}
    assert changed and all(k.startswith("model.encoder.layer.1.") for k in changed)
    assert sum(not torch.equal(v, unet_init[k]) for k, v in trainer.unet.state_dict().items()) > 0.5 * len(unet_init)
    assert {k for k in trainer.ema.shadow if k.startswith("text_encoder.")} == {f"text_encoder.{n}" for n in trainable}


def test_ldm_resume_is_bit_for_bit_and_exports_a_loadable_pipeline(tmp_path, vae_run, tiny_manifest, tiny_bert_dir):
    from safetensors.torch import load_file

    from medgen.pipelines.text_to_volume import ReportToVolumePipeline
    from medgen.training.ldm import LDMTrainer

    straight = _ldm_config(tmp_path / "a", vae_run, tiny_manifest, tiny_bert_dir, "train_ldm.validate_every=4")
    LDMTrainer(straight, device="cpu", progress=False).run()
    split = _ldm_config(tmp_path / "b", vae_run, tiny_manifest, tiny_bert_dir)
    first = LDMTrainer(split, device="cpu", progress=False)
    batches = iter(first.stream)
    for _ in range(2):
        first.train_step(next(batches))
    first.save()
    del first, batches
    torch.manual_seed(4321)
    resumed = LDMTrainer(split, resume=True, device="cpu", progress=False)
    assert resumed.start_step == 2 and resumed.stage == 0
    resumed.run()  # crosses into stage 2 on its first step
    a = _final_state(tmp_path / "a" / "checkpoints" / "ldm" / "step-00000004")
    b = _final_state(tmp_path / "b" / "checkpoints" / "ldm" / "step-00000004")
    assert "text_encoder" in a[0] and len(a[1]["optimizer"]["param_groups"]) == 2
    _assert_equal_nested(a, b)

    out = tmp_path / "a"
    assert (out / "samples" / "ldm" / "step-00000004.png").is_file()
    pipe = ReportToVolumePipeline.from_pretrained(out / "pipeline")
    ema = a[1]["ema"]["shadow"]
    unet = load_file(str(out / "pipeline" / "unet" / "model.safetensors"))
    assert all(torch.equal(unet[k], ema[f"unet.{k}"]) for k in unet)  # the pipeline holds the EMA weights
    assert pipe.config["scale_factor"] == pytest.approx(vae_scale(vae_run))
    assert pipe.text_encoder.frozen  # exported for inference


def vae_scale(vae_run) -> float:
    import json

    return json.loads((vae_run[4] / "config.json").read_text())["scale_factor"]


def test_latent_cache_is_reused_when_fresh_and_rebuilt_when_the_vae_changes(tmp_path, vae_run, tiny_manifest):
    from medgen.models.autoencoder import TrainedAutoencoder
    from medgen.training.latents import LatentDataset, cache_latents, read_index

    shutil.copytree(vae_run[4], tmp_path / "autoencoder")
    config = tiny_config(tmp_path, tiny_manifest)
    path = cache_latents(config, device="cpu", progress=False)
    index = read_index(path)
    assert len(index["splits"]["train"]) == 5 and len(index["splits"]["val"]) == 1
    data = LatentDataset(path, "train")
    assert tuple(data[0]["latent"].shape) == (4, 8, 8, 8) and data.scale_factor == pytest.approx(vae_scale(vae_run))
    stamp = (path / "latents.safetensors").stat().st_mtime_ns
    assert cache_latents(config, device="cpu", progress=False) == path
    assert (path / "latents.safetensors").stat().st_mtime_ns == stamp  # fresh: not re-encoded

    trained = TrainedAutoencoder.from_pretrained(tmp_path / "autoencoder")
    with torch.no_grad():
        next(trained.model.parameters()).add_(0.1)
    trained.save_pretrained(tmp_path / "autoencoder")
    cache_latents(config, device="cpu", progress=False)
    assert read_index(path)["key"] != index["key"]
    assert not torch.equal(LatentDataset(path, "train")[0]["latent"], data[0]["latent"])
