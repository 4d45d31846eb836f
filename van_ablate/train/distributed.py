"""The few collective operations the training job needs under ``torchrun`` or ``srun`` (a no-op
alone).

The paper trains on 8 GPUs with 128 images each (reference: imagenet_recipe); under torchrun, or
as one of the tasks of a SLURM job step (``srun``, Hydra's submitit launcher with
``tasks_per_node``), every rank runs the same job on its share of the data: NCCL on GPUs, gloo
on CPU. Losses and
validation counts are summed over ranks, BatchNorm statistics averaged before evaluation, and
only rank 0 writes.
"""

from __future__ import annotations

import subprocess
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
    """Where this process sits in a torchrun job or a SLURM job step (world_size 1 alone).

    ``master_addr`` / ``master_port`` are set for SLURM tasks (torchrun exports its own).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DistEnv:
        """Read torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``, else SLURM's task variables.

        >>> DistEnv.from_env({"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
        ...     "SLURM_JOB_ID": "7", "MASTER_ADDR": "node1", "MASTER_PORT": "29500"})
        DistEnv(world_size=2, rank=1, local_rank=1, master_addr='node1', master_port=29500)
        """
        if "WORLD_SIZE" in environ or int(environ.get("SLURM_NTASKS", 1)) <= 1:
            return cls(
                int(environ.get("WORLD_SIZE", 1)),
                int(environ.get("RANK", 0)),
                int(environ.get("LOCAL_RANK", 0)),
            )
        job = int(environ.get("SLURM_JOB_ID", 0))
        nodes = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", "")
        return cls(
            world_size=int(environ["SLURM_NTASKS"]),
            rank=int(environ.get("SLURM_PROCID", 0)),
            local_rank=int(environ.get("SLURM_LOCALID", 0)),
            master_addr=environ.get("MASTER_ADDR") or first_host(nodes),
            # One port per job, the same in every task (submitit's choice of range).
            master_port=int(environ.get("MASTER_PORT") or 20000 + job % 40000),
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
        init = f"tcp://{dist.master_addr}:{dist.master_port}" if dist.master_addr else None
        torch_dist.init_process_group(
            backend, init_method=init, rank=dist.rank, world_size=dist.world_size
        )
    return device


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[03-05,07]`` -> ``gpu03``), where rank 0 runs.

    SLURM's own ``scontrol show hostnames`` expands the compressed form.
    """
    if not nodelist or not any(c in nodelist for c in "[,"):
        return nodelist or "127.0.0.1"
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


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
