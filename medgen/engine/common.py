"""Pieces shared by the VAE and LDM training loops: resumable batch stream, logging, autocast, seeding."""

from __future__ import annotations

import contextlib
import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from medgen.engine.distributed import DistContext, ResumableSampler, init_distributed

__all__ = ["BatchStream", "RunLogger", "autocast", "finite_step", "run_and_close", "seed_everything"]


def run_and_close(trainer):
    """``trainer.run()``, then release its distributed context (process group) whatever happens."""
    try:
        return trainer.run()
    finally:
        trainer.ctx.close()


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python's `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context on the CPU (CPU bf16 is slow and not validated)."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def finite_step(optimizer: torch.optim.Optimizer, grad_norm: float, clipper) -> bool:
    """Step unless the gradient norm is non-finite (then the update is skipped and counted); zero the grads."""
    ok = math.isfinite(grad_norm)
    if ok:
        optimizer.step()
    else:
        clipper.num_skipped += 1
    optimizer.zero_grad(set_to_none=True)
    return ok


class BatchStream:
    """Endless batches, epoch after epoch, from a map-style dataset; its position is checkpointable.

    Each rank reads its shard of a seeded per-epoch permutation (`ResumableSampler`).  ``state_dict()``
    is ``{"epoch", "batch"}`` = the batches already handed out; `load_state_dict` continues from there.
    """

    def __init__(self, dataset, batch_size: int, ctx: DistContext, *, seed: int, collate_fn=None,
                 num_workers: int = 0, shuffle: bool = True):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.sampler = ResumableSampler(len(dataset), rank=ctx.rank, world_size=ctx.world_size, seed=seed,
                                        shuffle=shuffle)
        self.collate_fn = collate_fn
        self.num_workers = int(num_workers)
        self.pin_memory = ctx.device.type == "cuda"
        self.epoch = 0
        self.batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.sampler.per_rank / self.batch_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def __iter__(self):
        while True:
            self.sampler.set_epoch(self.epoch, self.batch * self.batch_size)
            # An own generator: creating a DataLoader iterator otherwise draws from the global RNG,
            # so a resumed run (which creates one mid-epoch) would diverge from an uninterrupted one.
            seeds = torch.Generator().manual_seed(self.sampler.seed + self.epoch)
            loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                                collate_fn=self.collate_fn, num_workers=self.num_workers,
                                pin_memory=self.pin_memory, generator=seeds)
            for batch in loader:
                self.batch += 1
                yield batch
            self.epoch += 1
            self.batch = 0


class RunLogger:
    """Scalars to TensorBoard (when `tensorboard` is installed) and to ``metrics.jsonl``; rank 0 only."""

    def __init__(self, log_dir, enabled: bool = True):
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.log_dir))
        except ImportError:  # tensorboard is an optional extra: metrics.jsonl still records everything
            self.writer = None

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, step)
        with open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": int(step), **clean}) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def start_run(trainer, config: dict, key: str, *, device, progress: bool, ctx: DistContext | None) -> None:
    """The set-up every trainer of a YAML recipe shares: its config section `key`, the distributed context,
    progress on the main process only, the output folder and the seeded RNGs (set as attributes of `trainer`)."""
    from medgen.config import resolve_path

    trainer.config, trainer.tc = config, config[key]
    trainer.ctx = ctx or init_distributed(device)
    trainer.device = trainer.ctx.device
    trainer.progress = progress and trainer.ctx.is_main
    trainer.out = resolve_path(config["output_dir"], config)
    trainer.seed = int(config.get("seed", 0))
    seed_everything(trainer.seed)


def init_from_pretrained(module: torch.nn.Module, folder, *, prefix: str = "", config: dict | None = None) -> None:
    """Start `module` from a saved component's weights (``folder/model.safetensors``, e.g. the embedded default's
    autoencoder) instead of a random init: fine-tuning on a new domain. `prefix` is stripped from the saved keys;
    every key must match (strict), so a network of another shape fails here rather than training half-loaded."""
    from safetensors.torch import load_file

    from medgen.config import resolve_path
    from medgen.errors import InputFileError

    folder = resolve_path(folder, config) if config is not None else Path(folder)
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise InputFileError(folder, "no model.safetensors to start from (`init_from`)")
    state = {k[len(prefix):]: v.float() for k, v in load_file(str(weights)).items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputFileError(folder, f"weights do not fit this network ({str(err).splitlines()[0]})") from None
