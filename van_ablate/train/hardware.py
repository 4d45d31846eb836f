"""How a job uses the machine: intra-op threads, OpenMP's wait policy and channels_last.

Three rules, each chosen from experiments on a shared 2-core CPU (README, Benchmark):

- **Wait policy, by a rule measured at start-up.** With OpenMP's default spin-waiting, ten
  two-thread forward passes of VAN-B0 at batch 4 did not finish in 100 s while another
  two-thread torch process computed on the same cores: a thread waiting at a barrier spins away
  the time slice the thread it waits for needs. Passive waiting (threads sleep at barriers)
  cures that, but costs about a quarter of `make run`'s speed on an idle machine (README,
  Benchmark). So the package samples ``/proc/stat`` for 0.1 s when it loads, before torch loads
  OpenMP: when other processes keep at least ``BUSY_CPUS`` CPUs busy, it asks for passive
  waiting; on an idle machine it leaves OpenMP's default. ``OMP_WAIT_POLICY``, when set, wins.
- **Threads.** torch's default counts every CPU of the host; a job gets the CPUs it may
  actually use (affinity mask, capped by a cgroup quota), shared evenly among jobs running side
  by side (a sweep's parallel trials, torchrun's processes on one node). ``OMP_NUM_THREADS``,
  when set, wins.
- **channels_last** is on in both training presets: faster on CPU (oneDNN) and on GPU tensor
  cores, with outputs equal to float rounding (tested).

::

    threads = intra_op_threads(available_cpus(), parallel_jobs=2)  # 1 on a 2-CPU machine
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
THREADS_ENV = "OMP_NUM_THREADS"
_CGROUP = Path("/sys/fs/cgroup")


BUSY_CPUS = 0.4  # CPUs kept busy by other processes from which sleeping beats spinning


def busy_cpus(before: list[int], after: list[int], cpus: int) -> float:
    """CPUs busy between two samples of ``/proc/stat``'s first line (its jiffy columns).

    >>> busy_cpus([100, 0, 50, 1000, 0], [180, 0, 70, 1100, 0], cpus=2)  # 100 of 200 busy
    1.0
    """
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta)
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)  # idle + iowait
    return cpus * (total - idle) / total if total > 0 else 0.0


def _cpu_jiffies(stat: Path = Path("/proc/stat")) -> list[int] | None:
    try:
        return [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None


def choose_wait_policy(environ: MutableMapping[str, str], sample_s: float = 0.1) -> None:
    """Ask OpenMP to sleep at barriers when other processes keep CPUs busy now, unless
    ``environ`` already says; on an idle machine OpenMP keeps its default (spin, then sleep).

    OpenMP reads the variable once, when torch loads it, so call this before importing torch.
    """
    if WAIT_POLICY_ENV in environ:
        return
    before = _cpu_jiffies()
    time.sleep(sample_s)
    after = _cpu_jiffies()
    if before and after and busy_cpus(before, after, os.cpu_count() or 1) >= BUSY_CPUS:
        environ[WAIT_POLICY_ENV] = "PASSIVE"


def cgroup_cpu_quota(root: Path = _CGROUP) -> float | None:
    """CPUs' worth of time a cgroup CPU quota allows (v2 ``cpu.max`` or v1 CFS), or None.

    Written by hand: neither the standard library nor torch reads a container's CPU quota.
    """
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, _, period = v2.read_text().split()[:2] + [""]
            return None if quota == "max" else int(quota) / int(period or "100000")
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = _CGROUP) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:  # macOS and Windows have no affinity mask
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def intra_op_threads(cpus: int, *, parallel_jobs: int = 1) -> int:
    """Threads for one of ``parallel_jobs`` jobs sharing ``cpus`` CPUs evenly (at least one).

    >>> [intra_op_threads(n, parallel_jobs=j) for n, j in ((2, 1), (2, 2), (16, 3))]
    [2, 1, 5]
    """
    return max(1, cpus // max(1, parallel_jobs))


def configure_threads(environ: MutableMapping[str, str], *, parallel_jobs: int = 1) -> int:
    """Set torch's intra-op threads for this job (``OMP_NUM_THREADS`` wins); returns the count."""
    import torch

    if environ.get(THREADS_ENV, "").isdigit() and int(environ[THREADS_ENV]) > 0:
        threads = int(environ[THREADS_ENV])
    else:
        threads = intra_op_threads(available_cpus(), parallel_jobs=parallel_jobs)
    torch.set_num_threads(threads)
    return threads


def describe(*, channels_last: bool) -> dict[str, Any]:
    """What this process computes with, for results.json ``setup`` and benchmark reports."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "cpus_available": available_cpus(),
        "wait_policy": os.environ.get(WAIT_POLICY_ENV, "default"),
        "channels_last": channels_last,
    }
