"""The few collective operations the training job needs under ``torchrun`` (a no-op alone).

The paper trains on 8 GPUs with 128 images each (reference: imagenet_recipe); under torchrun
every rank runs the same job on its share of the data: NCCL on GPUs, gloo on CPU. Losses and
validation counts are summed over ranks, BatchNorm statistics averaged before evaluation, and
only rank 0 writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from timm.utils import distribute_bn
from torch import nn

from van_ablate.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun job (world_size 1 without torchrun)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DistEnv:
        """Read torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``."""
        return cls(
            int(environ.get("WORLD_SIZE", 1)),
            int(environ.get("RANK", 0)),
            int(environ.get("LOCAL_RANK", 0)),
        )

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0


def setup(device_name: str, dist: DistEnv) -> torch.device:
    """This rank's device (``auto``: CUDA when there is one) and, under torchrun, the group."""
    if device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device", device_name, "no CUDA device here; use auto or cpu")
        torch.cuda.set_device(dist.local_rank)
        device = torch.device("cuda", dist.local_rank)
    else:
        device = torch.device("cpu")
    if dist.world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, rank=dist.rank, world_size=dist.world_size)
    return device


def teardown() -> None:
    """Leave the process group (if any)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def mean(value: torch.Tensor, dist: DistEnv) -> float:
    """The mean of a scalar over ranks (NaN if any rank has NaN)."""
    if dist.world_size > 1:
        value = value.float().clone()
        torch_dist.all_reduce(value)
        value /= dist.world_size
    return value.item()


def sum_(totals: torch.Tensor, dist: DistEnv) -> torch.Tensor:
    """Sum a tensor over ranks, in place."""
    if dist.world_size > 1:
        torch_dist.all_reduce(totals)
    return totals


def gather(obj: Any, dist: DistEnv) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if dist.world_size == 1:
        return [obj]
    out: list[Any] = [None] * dist.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def from_main(obj: Any, dist: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if dist.world_size == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_batch_norm_stats(model: nn.Module, dist: DistEnv) -> None:
    """Average BatchNorm running statistics over ranks (timm's ``--dist-bn reduce``).

    Each rank's last training forward moved its own statistics; after this every rank
    evaluates, and rank 0 saves, the same model.
    """
    if dist.world_size > 1:
        distribute_bn(model, dist.world_size, reduce=True)
