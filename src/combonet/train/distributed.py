"""Distributed data parallel under ``torchrun`` (gloo on CPU, NCCL on CUDA).

``--batch-size`` is the **global** batch: each of the ``K`` ranks takes ``batch_size / K``
examples per step (it must divide), drawn by a ``DistributedSampler`` whose shuffle depends on
``(seed, epoch)`` only. With ``K = 1`` the same sampler gives the single-process order, so a
``K``-rank run sees the same global batches as a single process (up to the padding of the last
batch) and averages the same gradients. Only rank 0 writes files; metrics are all-reduced.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Where this process sits: rank, world size and the device it computes on."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but CUDA is not available; use cpu/auto")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    here = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        here = True
    return DistInfo(rank, world, local_rank, dev, here)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when several ranks run (else ``model``).

    The model's buffers (masks, fixed weights) are identical on every rank, built from the
    seed, so they are not re-broadcast before every forward pass."""
    if not info.enabled:
        return model
    ids = [info.local_rank] if info.device.type == "cuda" else None
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
               else {"broadcast_buffers": False})  # the older name, deprecated in newer torch
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **no_sync)


def teardown(info: DistInfo) -> None:
    """Leave the process group (when this process joined it)."""
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few float64 numbers over all ranks (identity for one process)."""
    if not info.enabled:
        return list(values)
    dev = info.device if info.device.type == "cuda" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` is true on any rank."""
    if not info.enabled:
        return flag
    return all_reduce_sum([1.0 if flag else 0.0], info)[0] > 0


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["DistInfo", "all_reduce_sum", "any_rank", "barrier", "broadcast_object", "setup",
           "teardown", "wrap"]
