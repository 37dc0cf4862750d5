"""Distributed data-parallel training under ``torchrun`` (one process per device).

``torchrun --nproc_per_node=N -m medgen.cli.main train ldm --config ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `init_distributed` reads them and starts the process group
(NCCL on CUDA, Gloo on CPU).  Without them everything runs as a single process (world size 1).
Only rank 0 (`DistContext.is_main`) writes checkpoints, logs, samples and final models.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistContext", "ResumableSampler", "init_distributed", "resolve_device"]


def resolve_device(device=None, local_rank: int = 0) -> torch.device:
    """`device` ("cpu", "cuda", "cuda:1", None = CUDA when available) as a torch.device.

    Under torchrun a bare "cuda" becomes ``cuda:LOCAL_RANK``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("`device` is 'cuda' but no CUDA device is available (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


@dataclass
class DistContext:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def all_gather_object(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank (``[obj]`` when not distributed)."""
        if not self.distributed:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` in DistributedDataParallel when distributed (else unchanged)."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        """Destroy the process group if `init_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def init_distributed(device=None, timeout: timedelta | None = None) -> DistContext:
    """Read torchrun's environment and start the process group (idempotent); single process otherwise.

    `timeout`: how long a collective waits for the other ranks (default: torch's); batch generation, where
    a rank may wait at the end for the slowest one, passes a long one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistContext(device=dev)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                device_id=dev if dev.type == "cuda" else None,
                                **({"timeout": timeout} if timeout is not None else {}))
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=dev, owns_group=owns)


class ResumableSampler(Sampler[int]):
    """`DistributedSampler`-style sharding with a seeded shuffle per epoch and a start offset.

    Epoch ``e`` uses the permutation ``randperm(n, generator=seed + e)``, padded by wrapping around to a
    multiple of `world_size` and sharded ``rank::world_size`` (as ``torch.utils.data.DistributedSampler``).
    ``set_epoch(e, start=k)`` skips the first `k` indices of this rank's shard, so a resumed run continues
    exactly where it stopped without loading the skipped samples.
    """

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.n = int(num_samples)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.shuffle = int(seed), shuffle
        self.per_rank = math.ceil(self.n / self.world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def indices(self) -> list[int]:
        """This rank's full shard for the current epoch (ignoring `start`)."""
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank:total:self.world_size]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
