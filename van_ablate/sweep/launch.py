"""Launch one batch of trials and get one ``JobReturn`` per trial, whatever became of its job.

Hydra's submitit launcher waits for its jobs in order and raises for the whole batch as soon as
one job ends without a result (cancelled with ``scancel``, a node failure, the time limit after
``max_num_timeout`` requeues): the other trials' results would be lost with their jobs still
running. Here the batch is submitted through submitit's public executor API, from the same
``hydra.launcher`` settings and as the same job array, and each job is waited for on its own; a
job without a result becomes a FAILED return whose error, :class:`NoResult`, names the job and
the state the cluster reports. So does a job that SIGTERM stopped while it trained and that then
ended (``scancel``): it wrote a checkpoint and returned :class:`~van_ablate.errors.Preempted`,
not a result. A job that SLURM requeued after that SIGTERM is waited for: its next run resumes
and its result counts. Job states come from ``squeue`` (every cluster answers it for jobs
pending, running, or ended within its ``MinJobAge``), and from ``sacct`` only for a job squeue
has forgotten on a cluster that keeps accounting; a cluster without accounting is said once::

    returns = launch(launcher, config, [["model.kernel_size=21"], ["model.kernel_size=7"]], 0)
    returns[1]._return_value  # NoResult('SLURM job 12_1 CANCELLED by 0')

Other launchers (basic, joblib) run their jobs as Hydra does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf

from van_ablate.errors import Preempted
from van_ablate.sweep.outcome import NoResult

log = logging.getLogger(__name__)
# submitit's states of a job that has not ended yet
_NOT_ENDED = {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED"}


def launch(
    launcher: Launcher,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """One return per job, in order, once every job has ended."""
    try:
        from hydra_plugins.hydra_submitit_launcher import submitit_launcher as submitit_plugin
    except ImportError:  # the slurm extra is not installed
        submitit_plugin = None
    if submitit_plugin is None or not isinstance(launcher, submitit_plugin.BaseSubmititLauncher):
        return list(launcher.launch(job_overrides, initial_job_idx))
    cluster = "slurm" if isinstance(launcher, submitit_plugin.SlurmLauncher) else "local"
    jobs = _submit(launcher, config, cluster, job_overrides, initial_job_idx)
    if cluster == "slurm" and jobs:
        _accounting(str(jobs[0].job_id))  # said once: how this cluster's jobs are followed
    return [_result(job, cluster) for job in jobs]


def _submit(
    launcher: Launcher,
    config: DictConfig,
    cluster: str,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[Any]:
    """Submit the batch as one job array, with the executor hydra-submitit-launcher would build
    from ``hydra.launcher``: ``max_num_timeout`` configures the executor, submitit's generic
    keys pass as they are, the others get the cluster's prefix. Each job calls the launcher,
    which runs one Hydra job, as that launcher's own ``launch`` has it do."""
    import submitit

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    assert isinstance(params, dict)
    params.pop("_target_", None)
    folder = params.pop("submitit_folder")
    timeouts = {f"{cluster}_{k}": params.pop(k) for k in ("max_num_timeout",) if k in params}
    executor = submitit.AutoExecutor(cluster=cluster, folder=folder, **timeouts)
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{(k if k in generic else f"{cluster}_{k}"): v for k, v in params.items()}
    )
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
    log.info("submitting %d %s job(s) for %s", len(job_overrides), cluster, sweep_dir)
    numbers = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
    for number, overrides in zip(numbers, job_overrides, strict=True):
        log.info("  job %d: %s", number, " ".join(filter_overrides(overrides)))
    n = len(numbers)
    return executor.map_array(
        launcher,
        [list(o) for o in job_overrides],
        ["hydra.sweep.dir"] * n,
        numbers,
        [f"job_id_for_{i}" for i in numbers],
        [Singleton.get_state()] * n,
    )


def _result(job: Any, cluster: str) -> JobReturn:
    from submitit.core.utils import FailedJobError, UncompletedJobError

    if cluster == "slurm":  # submitit would wait on sacct, which may never answer: wait here
        state = _wait(job, lambda: job.paths.result_pickle.exists())
        if not job.paths.result_pickle.exists():
            return _no_result(job, cluster, state)
    try:
        ret = job.results()[0]
    except FailedJobError as e:  # the job's Python raised outside Hydra's run_job
        return JobReturn(status=JobStatus.FAILED, _return_value=e)
    except UncompletedJobError:
        return _no_result(job, cluster)
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Preempted):
        # SIGTERM came while training: a checkpoint, no result yet. A cancelled job has ended
        # without one; a requeued one (scontrol requeue, preemption) resumes from that
        # checkpoint in its next run, which overwrites the result: wait for it and read it.
        state = _final_state(job, cluster)
        again = job.results()[0]  # a resumed run that finished replaced the stopped one's result
        if not isinstance(again._return_value, Preempted):
            return again
        return _no_result(job, cluster, state, ret._return_value)
    return ret


def _no_result(
    job: Any, cluster: str, state: str | None = None, stopped: Preempted | None = None
) -> JobReturn:
    name = "SLURM job" if cluster == "slurm" else f"{cluster} job"
    detail = f" ({stopped})" if stopped is not None else ""
    error = NoResult(f"{name} {job.job_id} {state or _final_state(job, cluster)}{detail}")
    return JobReturn(status=JobStatus.FAILED, _return_value=error)


def _final_state(job: Any, cluster: str) -> str:
    """The job's state once it has ended: a job stopped by a signal returns before it ends, and
    a requeued one runs again first."""
    return _wait(job, lambda: False) if cluster == "slurm" else _local_state(job)


def _wait(job: Any, done: Any) -> str:
    """Poll a SLURM job's state until it has ended or ``done()``; returns the last state.
    Every 2 s for a minute, then every 30 s."""
    started = time.monotonic()
    while True:
        state = slurm_state(job)
        waited = time.monotonic() - started
        if state.split()[0] not in _NOT_ENDED or done():
            return state
        time.sleep(2.0 if waited < 60 else 30.0)


def _local_state(job: Any, unknown_for_s: float = 120.0) -> str:
    """A local job's state from submitit, polled until it has ended (UNKNOWN for long: ended)."""
    started = time.monotonic()
    while True:
        job.get_info(mode="force")
        state = job.state
        waited = time.monotonic() - started
        if state.split()[0] not in _NOT_ENDED or (state == "UNKNOWN" and waited > unknown_for_s):
            return state
        time.sleep(2.0)


def slurm_state(job: Any) -> str:
    """A SLURM job's state (``RUNNING``, ``COMPLETED``, ``CANCELLED by 0``...): from squeue,
    else from sacct where the cluster keeps accounting, else ``ENDED`` (the cluster has
    forgotten it). ``UNKNOWN`` (not ended) while the controller does not answer."""
    job_id = str(job.job_id)
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    )
    if out.returncode == 0 and out.stdout.split():
        return out.stdout.split()[0]
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return "UNKNOWN"  # the controller did not answer: ask again later
    if not _accounting(job_id):
        return "ENDED"
    job.get_info(mode="force")  # sacct, through submitit
    return job.state if job.state != "UNKNOWN" else "ENDED"


# Whether this cluster keeps accounting (sacct answers), asked once per sweep process.
_ACCOUNTING: dict[str, bool] = {}


def _accounting(job_id: str) -> bool:
    key = os.environ.get("SLURM_CONF", "")
    if key not in _ACCOUNTING:
        out = subprocess.run(["sacct", "-n", "-X", "-j", job_id], capture_output=True, text=True)
        _ACCOUNTING[key] = out.returncode == 0
        if out.returncode != 0:
            why = " ".join(out.stderr.split()) or f"exit code {out.returncode}"
            log.warning(
                "SLURM accounting is off on this cluster (sacct: %s): jobs are followed "
                "with squeue while it remembers them (MinJobAge)",
                why,
            )
    return _ACCOUNTING[key]
