"""On a real one-node SLURM cluster (``tests/services.py``): a job step of 2 tasks trains one run
with DDP under ``srun``, and a ready study sends each trial to SLURM through Hydra's submitit
launcher (``+launcher=slurm``), with its results back in the study, a trial whose job is
cancelled with ``scancel`` fails with that reason and is retried once, and a job requeued with
``scontrol requeue`` resumes from the step SLURM's SIGTERM stopped it at.

The tests read job states with ``scontrol show job``; the sweeper reads them with ``squeue``,
and ``sacct`` where the cluster keeps accounting. The sweeps that cancel or requeue a job run on
two clusters: one with slurmdbd (accounting) and one without, where ``sacct`` refuses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import REPO, TINY_RUN, read_results, run_env, write_image_folder
from optuna.trial import TrialState

from van_ablate.sweep import coordinator as co
from van_ablate.sweep.storage import JOURNAL_NAME, open_storage

# Each trial's SLURM job on a CPU node: one task, one core, no GPU.
SLURM_CPU_JOB = [
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def test_two_tasks_of_a_slurm_job_train_one_run_with_ddp_under_srun(slurm, image_folder, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY_RUN, "train.epochs=1", "train.batch_size=4", "data=imagefolder"]
    args += [f"data.root={image_folder}", f"hydra.run.dir={run_dir}", "train.device=cpu"]
    srun = ["srun", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=5"]
    proc = subprocess.run(
        [*srun, sys.executable, "-m", "van_ablate", *args],
        cwd=tmp_path,
        env=run_env(SLURM_CONF=str(slurm.conf)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = read_results(run_dir)
    assert r["status"] == "completed"
    assert (r["setup"]["world_size"], r["setup"]["global_batch"]) == (2, 8)
    # 24 train images over 2 ranks x 4 per step: 3 updates per epoch, all images seen.
    assert r["setup"]["updates_per_epoch"] == 3
    assert proc.stdout.count("status") == 1  # one summary, from rank 0
    assert "COMPLETED" in slurm.settled_states().values()


@pytest.mark.slow
def test_a_ready_study_runs_each_trial_as_a_slurm_job_and_finishes_n_trials(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    before = set(slurm.job_states())
    args = [*table3_on_slurm(slurm, sweep_dir), "data.num_train=48", "data.num_val=24"]
    sweep_on(slurm, tmp_path, args)
    storage = open_storage(str(sweep_dir / JOURNAL_NAME))
    study = optuna.load_study(study_name="table3_van_proxy_builtin_v3", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    jobs = {j: s for j, s in slurm.settled_states().items() if j not in before}
    assert sorted(jobs.values()) == ["COMPLETED", "COMPLETED"]  # one SLURM job per trial
    for t in study.trials:
        results = json.loads((sweep_dir / f"trial_{t.number}" / "results.json").read_text())
        assert t.value == results["best"]["val_top1"]
    # submitit sent them as one job array: <array id>_<task> folders, one per trial.
    submitted = sorted(p.name for p in (sweep_dir / ".submitit").glob("*_*") if p.is_dir())
    assert submitted == [f"{min(jobs, key=int)}_{i}" for i in range(2)]


# The two clusters a sweep must handle: with accounting (sacct answers) and without.
CLUSTERS = pytest.mark.parametrize("cluster", ["slurm", "slurm_without_accounting"])


def _sweep_and_interrupt_trial_1(slurm, tmp_path, command: str) -> tuple[int, str, list, str]:
    """A 2-trial table3 sweep on the cluster whose trial-1 job gets ``scontrol``/``scancel``
    ``command`` once it trains; returns (exit code, log, the study's trials, that job's id).
    No failure is allowed: a job requeued or a trial retried must not stop the sweep."""
    sweep_dir = tmp_path / "sweep"
    args = [
        *table3_on_slurm(slurm, sweep_dir),
        "hydra.sweeper.max_failure_rate=0.0",
        "train.epochs=3",  # 36 steps: still training when the signal arrives
        "data.num_train=96",
        "data.num_val=24",
    ]
    with open(tmp_path / "sweep.out", "w+") as out:
        sweep = subprocess.Popen(
            [sys.executable, "-m", "van_ablate", *args],
            cwd=tmp_path,
            env=run_env(SLURM_CONF=str(slurm.conf)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        # Trial 1 is the second task of the first job array; interrupt it once it trains.
        started = sweep_dir / "trial_1" / "config.yaml"
        deadline = time.time() + 300
        while not started.exists() and sweep.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        squeue = ["squeue", "-h", "-t", "RUNNING", "-o", "%i"]
        running = subprocess.run(squeue, env=slurm.env, capture_output=True, text=True).stdout
        job = next((j for j in running.split() if j.endswith("_1")), None)
        assert job is not None, f"trial 1's job is not running: {running!r}"
        subprocess.run([*command.split(), job], env=slurm.env, check=True)
        code = sweep.wait(timeout=600)
        out.seek(0)
        log = out.read()
    storage = open_storage(str(sweep_dir / JOURNAL_NAME))
    trials = optuna.load_study(study_name="table3_van_proxy_builtin_v3", storage=storage).trials
    return code, log, trials, job


@pytest.mark.slow  # three tiny trials through SLURM, one of them cancelled: about two minutes
@CLUSTERS
def test_a_trial_whose_slurm_job_is_cancelled_fails_with_the_reason_and_is_retried_once(
    cluster, request, tmp_path
):
    slurm = request.getfixturevalue(cluster)
    code, log, trials, cancelled = _sweep_and_interrupt_trial_1(slurm, tmp_path, "scancel")
    sweep_dir = tmp_path / "sweep"
    assert code == 0, log[-3000:]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed, retry = trials[1], trials[2]
    reason = failed.user_attrs[co.REASON]
    assert reason.startswith(f"SLURM job {cancelled} CANCELLED") and reason.endswith("; retried")
    assert f"Trial 1 FAIL: {reason}" in log
    assert retry.params == failed.params and retry.system_attrs[co.RETRIED_FROM] == 1
    # The retry replaces the cancelled trial: two trials count, both complete.
    assert co.state_counts(trials) == {
        "complete": 2,
        "pruned": 0,
        "fail": 0,
        "running": 0,
        "waiting": 0,
        "retried": 1,
    }
    results = json.loads((sweep_dir / "trial_1" / "results.json").read_text())
    assert retry.value == results["best"]["val_top1"]  # the retry ran in trial 1's directory


@pytest.mark.slow  # two tiny trials through SLURM, one of them requeued: about two minutes
@CLUSTERS
def test_a_trial_whose_slurm_job_is_requeued_resumes_and_ends_with_one_value(
    cluster, request, tmp_path
):
    slurm = request.getfixturevalue(cluster)
    code, log, trials, _ = _sweep_and_interrupt_trial_1(slurm, tmp_path, "scontrol requeue")
    assert code == 0, log[-3000:]
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    results = json.loads((tmp_path / "sweep" / "trial_1" / "results.json").read_text())
    assert results["status"] == "completed" and len(results["epochs"]) == 3
    assert trials[1].value == results["best"]["val_top1"]
    assert "stop signal 15 after" in (tmp_path / "sweep" / "trial_1" / "train.log").read_text()
    # Without accounting the sweep says so once and never polls sacct (submitit's warning).
    accounting = subprocess.run(["sacct", "-n"], env=slurm.env, capture_output=True).returncode
    assert log.count("SLURM accounting is off") == (0 if accounting == 0 else 1), log[-3000:]
    assert "Bypassing sacct error" not in log


@pytest.mark.slow  # two three-epoch runs, one of them requeued: a few minutes on 2 shared cores
def test_a_requeued_slurm_job_resumes_from_its_step_with_the_uninterrupted_metrics(slurm, tmp_path):
    from test_resume import ARGS, PER_CLASS_LONG, same_metrics, start

    root = write_image_folder(tmp_path / "images", per_class=PER_CLASS_LONG)
    reference = start(root, tmp_path / "reference")
    run_dir = tmp_path / "requeued"
    train = [*ARGS, f"data.root={root}", f"hydra.run.dir={run_dir}"]
    job = submit(slurm, tmp_path, ["exec", sys.executable, "-m", "van_ablate", *train])
    ckpts = run_dir / "checkpoints"
    deadline = time.time() + 300
    while not (ckpts / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # into epoch 2 (~2 s long: room for slurmctld to deliver the signal)
    subprocess.run(["scontrol", "requeue", job], env=slurm.env, check=True)
    while slurm.job_states().get(job) != "COMPLETED" and time.time() < deadline + 300:
        time.sleep(0.5)
    assert slurm.job_states()[job] == "COMPLETED", (tmp_path / "job.out").read_text()[-3000:]
    assert reference.wait(timeout=300) == 0
    got = read_results(run_dir)
    assert got["status"] == "completed" and len(got["epochs"]) == 3
    same_metrics(got, read_results(tmp_path / "reference"))
    log = (run_dir / "train.log").read_text()
    assert "stop signal 15 after" in log  # SLURM's SIGTERM: a mid-epoch checkpoint, then exit
    assert "and 0 batches of epoch" not in log and "batches of epoch 2" in log


@pytest.mark.slow  # six tiny trials, two SLURM jobs at a time: about two minutes
def test_an_adaptive_sweep_on_slurm_trains_no_row_and_seed_twice_and_stops_by_itself(
    slurm, tmp_path
):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", f"--config-dir={REPO / 'experiments'}", "hydra/sweeper=van_optuna"]
    args += ["hydra/sweeper/sampler=adaptive", "hydra.sweeper.sampler.min_seeds=2"]
    args += ["hydra.sweeper.sampler.max_seeds=3", "hydra.sweeper.n_trials=6"]
    args += ["+ablation=choice(baseline,dense_conv)", "seed=range(0,3)"]
    args += ["hydra.sweeper.direction=maximize", "hydra.sweeper.study_name=adaptive"]
    args += ["+launcher=slurm", f"hydra.launcher.partition={slurm.partition}", *SLURM_CPU_JOB]
    args += ["hydra.sweeper.n_jobs=2", f"hydra.sweep.dir={sweep_dir}", *TINY_RUN]
    args += ["data.num_train=48", "data.num_val=24"]
    sweep_on(slurm, tmp_path, args)
    storage = open_storage(str(sweep_dir / JOURNAL_NAME))
    trials = optuna.load_study(study_name="adaptive", storage=storage).trials
    points = [(t.params["+ablation"], t.params["seed"]) for t in trials]
    assert len(points) == len(set(points)) and 4 <= len(points) <= 6
    assert {("baseline", 0), ("baseline", 1), ("dense_conv", 0), ("dense_conv", 1)} <= set(points)
    assert all(t.state == TrialState.COMPLETE for t in trials)


def sweep_on(slurm, cwd: Path, args: list[str]) -> None:
    """Run the app with ``args`` against the cluster from ``cwd``; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "van_ablate", *args],
        cwd=cwd,
        env=run_env(SLURM_CONF=str(slurm.conf)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def table3_on_slurm(slurm, sweep_dir: Path) -> list[str]:
    """The app's arguments for a 2-trial ready table3 study, one SLURM job per trial."""
    return [
        "-m",
        f"--config-dir={REPO / 'experiments'}",
        "+study=table3",
        "hydra/sweeper/sampler=grid",  # two points of its grid (adaptive needs a round of 24)
        "+launcher=slurm",
        f"hydra.launcher.partition={slurm.partition}",
        *SLURM_CPU_JOB,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        *TINY_RUN,
    ]


def submit(slurm, cwd, command: list[str]) -> str:
    """``sbatch --requeue`` one task running ``command``; returns the job id."""
    out = subprocess.run(
        ["sbatch", "--parsable", "--requeue", "--ntasks=1", "--cpus-per-task=1"]
        + ["-o", str(cwd / "job.out"), "--open-mode=append", "--wrap", " ".join(command)],
        cwd=cwd,
        env=run_env(SLURM_CONF=str(slurm.conf)),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split(";")[0]
