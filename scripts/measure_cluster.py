"""Measure the cluster figures of the README's "Sweeps on a cluster" section, on this machine.

Starts its own one-node SLURM cluster and PostgreSQL server (``tests/services.py``), stops them
after, and prints:

- trials/hour of a small proxy study (``+study=table3``, scale=proxy, a few hundred images) through
  ``+launcher=slurm`` with 1 and with 2 concurrent jobs, and through the basic launcher;
- the per-trial overhead of SLURM + submitit against the basic launcher (1 job at a time);
- the seconds of training redone after ``scontrol requeue`` (time from the requeue back to the
  checkpoint the requeued job resumes from);
- the seconds from a sweep worker's SIGKILL to its trial's retry starting, on PostgreSQL.

Run it on a quiet machine (about 10 minutes; needs ``apt-get install slurm-wlm munge``)::

    .venv/bin/python scripts/measure_cluster.py
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from services import postgres_server, slurm_cluster  # noqa: E402

PROXY = [
    "logger=none",
    "data.num_workers=0",
    "data.num_train=256",
    "data.num_val=128",
    "train.epochs=2",
]
SLURM_CPU_JOB = [
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=30",
]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    return {**base, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}


def timed_study(work: Path, name: str, n_trials: int, extra: list[str], e: dict) -> float:
    """Seconds for a fresh ``table3`` study of ``n_trials`` trials."""
    cmd = [sys.executable, "-m", "van_ablate", "-m", f"--config-dir={REPO / 'experiments'}"]
    cmd += ["+study=table3", "hydra/sweeper/sampler=grid", f"hydra.sweeper.n_trials={n_trials}"]
    cmd += [*PROXY, *extra]
    cmd += [f"hydra.sweep.dir={work / name}"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, env=e, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - start


def job_field(cluster, job: str, name: str) -> str:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job], env=cluster.env, capture_output=True, text=True
    ).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return fields.get(name, "")


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def requeue_loss(cluster, work: Path, e: dict) -> float:
    """Seconds of training done before ``scontrol requeue`` that the requeued job redoes."""
    run_dir = work / "requeue_run"
    train = [*PROXY[:-1], "train.epochs=4", f"hydra.run.dir={run_dir}", "train.device=cpu"]
    wrap = " ".join(["exec", sys.executable, "-m", "van_ablate", *train])
    out = subprocess.run(
        ["sbatch", "--parsable", "--requeue", "--cpus-per-task=1", "-o", str(work / "rq.out")]
        + ["--wrap", wrap],
        env=e,
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    ).stdout.strip()
    job = out.split(";")[0]
    log = run_dir / "train.log"
    wait_for(lambda: log.exists() and "epoch 2/" in log.read_text(), 600, "epoch 2")
    time.sleep(1.5)  # into epoch 3 (or 2): some work since the last epoch checkpoint
    requeued_at = time.time()
    subprocess.run(["scontrol", "requeue", job], env=cluster.env, check=True)
    wait_for(lambda: job_field(cluster, job, "Restarts") not in ("", "0"), 120, "the requeue")
    wait_for(lambda: job_field(cluster, job, "JobState") != "RUNNING", 120, "the first attempt")
    ckpt = run_dir / "checkpoints" / "last.pt"
    resumed_from = ckpt.stat().st_mtime if ckpt.exists() else requeued_at
    wait_for(lambda: job_field(cluster, job, "JobState") == "COMPLETED", 900, "the requeued job")
    return max(0.0, requeued_at - resumed_from)


def kill_to_retry(pg, work: Path, e: dict) -> float:
    """Seconds from a worker's SIGKILL mid-trial to its trial's retry starting (PostgreSQL)."""
    import optuna

    from van_ablate.sweep.storage import open_storage

    url = pg.new_database("measure_kill")
    sweep_dir = work / "pg_sweep"
    cmd = [sys.executable, "-m", "van_ablate", "-m", f"--config-dir={REPO / 'experiments'}"]
    long_trial = [*PROXY[:-1], "train.epochs=50"]  # still running when the worker is killed
    cmd += ["+study=table3", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=1"]
    cmd += long_trial
    cmd += [f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.storage='{url}'"]
    cmd += ["hydra.sweeper.stale_after_s=10"]
    victim = subprocess.Popen(
        cmd, cwd=work, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    wait_for(lambda: (sweep_dir / "trial_0" / "train.log").exists(), 300, "trial 0")
    # The peer starts before the kill and idles (the one trial is taken): its start-up is not
    # part of the figure, only how long the dead worker's trial takes to be noticed and retried.
    peer_log = work / "peer.log"
    with open(peer_log, "w") as out:
        peer = subprocess.Popen(cmd, cwd=work, env=e, stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: "on this study" in peer_log.read_text(), 300, "the peer's start")
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    storage = open_storage(url)

    def retry_started() -> float | None:
        study = optuna.load_study(study_name="table3_van_proxy_builtin_v3", storage=storage)
        for t in study.get_trials(deepcopy=False):
            if t.system_attrs.get("failed_trial") == 0 and t.datetime_start is not None:
                return t.datetime_start.timestamp()
        return None

    wait_for(lambda: retry_started() is not None, 300, "the retry")
    started = retry_started() or killed_at
    peer.kill()  # the retry's training is not part of the figure
    peer.wait()
    return started - killed_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials per timed study")
    args = parser.parse_args()
    n = args.trials
    with tempfile.TemporaryDirectory(prefix="van-ablate-measure-") as tmp:
        work = Path(tmp)
        with slurm_cluster(work / "slurm") as cluster:
            e = env(SLURM_CONF=str(cluster.conf))
            slurm = ["+launcher=slurm", f"hydra.launcher.partition={cluster.partition}"]
            basic_s = timed_study(work, "basic", n, [], e)
            one_s = timed_study(
                work, "slurm1", n, [*slurm, *SLURM_CPU_JOB, "hydra.sweeper.n_jobs=1"], e
            )
            two_s = timed_study(
                work, "slurm2", n, [*slurm, *SLURM_CPU_JOB, "hydra.sweeper.n_jobs=2"], e
            )
            redone_s = requeue_loss(cluster, work, e)
        with postgres_server() as pg:
            retry_s = kill_to_retry(pg, work, env())
    print(f"proxy study: +study=table3 (scale=proxy), {n} trials each, {' '.join(PROXY)}")
    print(f"basic launcher:               {n / basic_s * 3600:7.1f} trials/hour")
    print(f"SLURM + submitit, 1 job:      {n / one_s * 3600:7.1f} trials/hour")
    print(f"SLURM + submitit, 2 jobs:     {n / two_s * 3600:7.1f} trials/hour")
    print(f"per-trial overhead of SLURM + submitit vs basic: {(one_s - basic_s) / n:.1f} s")
    print(f"training redone after scontrol requeue:          {redone_s:.1f} s")
    print(f"SIGKILL of a worker -> its trial's retry starts: {retry_s:.1f} s (stale_after_s=10)")


if __name__ == "__main__":
    main()
