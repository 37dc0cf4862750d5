"""DistributedDataParallel on 2 CPU processes (Gloo): both ranks end with identical weights.

The workers are forked (not spawned), so they reuse the already-imported torch/MONAI instead of paying
the import again; each uses one thread (2 ranks on 2 cores, and OpenMP is not fork-safe otherwise).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from medgen.config import load_config

# The tiny config keeps 64 tokens; most phantom reports are longer (the encoder warns each time).
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than max_length:UserWarning")
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dump(path: Path, state: dict) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))


def _worker(rank: int, port: int, overrides: list[str], out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    from medgen.training.ldm import LDMTrainer
    from medgen.training.vae import VAETrainer

    config = load_config(TINY, overrides)
    out = Path(out)
    vae = VAETrainer(config, device="cpu", progress=False)
    assert vae.ctx.world_size == 2 and vae.ctx.rank == rank
    if rank == 0:
        _dump(out / "vae_init.safetensors", vae.autoencoder.state_dict())
    vae.run()  # rank 0 writes the autoencoder; every rank waits for it
    _dump(out / f"vae_rank{rank}.safetensors", {**{f"ae.{k}": v for k, v in vae.autoencoder.state_dict().items()},
                                               **{f"d.{k}": v for k, v in vae.discriminator.named_parameters()}})

    ldm = LDMTrainer(config, device="cpu", progress=False, ctx=vae.ctx)
    if rank == 0:
        _dump(out / "ldm_init.safetensors", ldm.unet.state_dict())
    batches = iter(ldm.stream)
    # 2 steps of stage 1, then 1 of stage 2 (DDP re-wrapped). The text gets gradients from step 3 only:
    # MONAI zero-initialises the UNet's output layers, so gradients reach the inputs one layer a step.
    losses = [ldm.train_step(next(batches))["ldm/loss"] for _ in range(3)]
    assert ldm.text_trained, "stage 2 should have unfrozen a text layer"
    _dump(out / f"ldm_rank{rank}.safetensors", {**{f"unet.{k}": v for k, v in ldm.unet.state_dict().items()},
                                                **{f"text.{k}": v for k, v in ldm.text.state_dict().items()},
                                                **{f"ema.{k}": v for k, v in ldm.ema.shadow.items()}})
    (out / f"losses_rank{rank}.json").write_text(json.dumps(losses))
    vae.ctx.close()


def test_two_ranks_end_with_identical_weights(tmp_path, tiny_manifest, tiny_bert_dir):
    overrides = [f"output_dir={tmp_path / 'run'}", f"data.manifest={tiny_manifest}", f"text_encoder.name_or_path={tiny_bert_dir}",
                 "data.shape=[16,16,16]", "data.spacing=[20,20,20]", "train_vae.steps=2", "train_vae.adv_start=1",
                 "train_vae.validate_every=100", "train_ldm.validate_every=100", "train_ldm.drop_text=0.5",
                 "train_ldm.stages=[{steps: 2, trainable_text_layers: 0}, {steps: 1, trainable_text_layers: 1, text_lr: 1.0e-3}]"]
    mp.start_processes(_worker, args=(_free_port(), overrides, str(tmp_path)), nprocs=2, start_method="fork")

    for stage in ("vae", "ldm"):
        a = load_file(str(tmp_path / f"{stage}_rank0.safetensors"))
        b = load_file(str(tmp_path / f"{stage}_rank1.safetensors"))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{stage}: ranks disagree on {different[:5]}"
        init = load_file(str(tmp_path / f"{stage}_init.safetensors"))
        prefix = "ae." if stage == "vae" else "unet."
        moved = [k for k in init if not torch.equal(init[k], a[prefix + k])]
        # (after 3 steps part of the UNet has not moved yet: MONAI zero-initialises its output layers)
        assert len(moved) > (0.5 if stage == "vae" else 0.1) * len(init), f"{stage}: training did not change the weights"
    top = [k for k in a if k.startswith("text.model.encoder.layer.1.")]
    assert top and any(not torch.equal(a[k], load_file(str(tiny_bert_dir / "model.safetensors"))[k[len("text.model."):]])
                       for k in top)
    losses = [json.loads((tmp_path / f"losses_rank{r}.json").read_text()) for r in range(2)]
    assert losses[0] != losses[1]  # each rank trained on its own shard of the data
    assert (tmp_path / "run" / "autoencoder" / "model.safetensors").is_file()
