"""The van_optuna Hydra sweeper end to end, on a tiny Hydra app written into a temp dir.

The app is a real ``@hydra.main`` program (not a mock): its "training" reports one value per
epoch through :func:`van_ablate.sweep.trial.report_epoch` and returns ``-(x-2)**2 + 0.1*epochs``
(best at x=2), or ``[that, x]`` with ``multi=true``. The slow tests kill a sweep mid-trial and
run three sweeps at once on one storage.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import offline_wandb_record
from omegaconf import OmegaConf
from optuna.trial import TrialState

from van_ablate.sweep.coordinator import counted
from van_ablate.sweep.storage import JOURNAL_NAME, open_storage

APP = """
import math, os, time
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from van_ablate.sweep.trial import report_epoch

@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    with open(out / "started", "a") as f:
        f.write(f"{os.getpid()}\\n")
    if cfg.x == cfg.fail_when:
        raise RuntimeError(f"boom at x={cfg.x}")
    score = 0.0
    for epoch in range(1, cfg.epochs + 1):
        time.sleep(cfg.sleep)
        score = -(cfg.x - 2) ** 2 + 0.1 * epoch
        report_epoch(cfg.trial, epoch, score)
    if cfg.x == cfg.nan_when:
        score = math.nan
    return [score, float(cfg.x)] if cfg.multi else score

if __name__ == "__main__":
    main()
"""

CONFIG = """
defaults:
  - override hydra/sweeper: van_optuna
  - override hydra/sweeper/sampler: grid
x: 0
epochs: 3
sleep: 0.0
fail_when: null
nan_when: null
multi: false
trial: {storage: null, study_name: null, number: null}
hydra:
  sweep:
    dir: multirun/${hydra.sweeper.study_name}
  sweeper:
    study_name: toy
    direction: maximize
    n_trials: 4
    params:
      x: choice(2, 3, 0, 1)
"""


def write_app(root: Path) -> Path:
    """The toy app and its config in ``root``."""
    (root / "app.py").write_text(textwrap.dedent(APP))
    (root / "config.yaml").write_text(CONFIG)
    return root


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_app(tmp_path)


def sweep(app: Path, *overrides: str, ok: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "app.py", "-m", *overrides]
    proc = subprocess.run(cmd, cwd=app, capture_output=True, text=True, timeout=300, env=_env())
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def start(app: Path, *overrides: str, log: str) -> subprocess.Popen:
    with open(app / log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "app.py", "-m", *overrides],
            cwd=app,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def study(app: Path, name: str = "toy") -> optuna.Study:
    storage = open_storage(str(app / "multirun" / name / JOURNAL_NAME))
    return optuna.load_study(study_name=name, storage=storage)


def summary(app: Path, name: str = "toy") -> dict:
    return yaml.safe_load((app / "multirun" / name / "optimization_results.yaml").read_text())


def test_tpe_study_runs_n_trials_and_writes_the_best_trial(app):
    sweep(
        app,
        "hydra/sweeper/sampler=tpe",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "hydra.sweeper.sampler.seed=0",
        "x=range(0,5)",
    )
    trials = study(app).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    best = max(trials, key=lambda t: t.value)
    result = summary(app)
    assert result["best_value"] == pytest.approx(best.value)
    assert result["best_params"] == best.params
    assert result["counts"]["complete"] == 4
    for t in trials:  # each job ran in its own directory, told its trial, and reported epochs
        assert (app / "multirun/toy" / f"trial_{t.number}" / "started").exists()
        assert sorted(t.intermediate_values) == [1, 2, 3]


def test_a_pruner_stops_a_bad_trial_after_its_first_epoch(app):
    sweep(
        app,
        "epochs=5",
        "x=choice(2,3,0)",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=-2.0",
    )
    trials = {t.params["x"]: t for t in study(app).trials}
    assert trials[2].state == trials[3].state == TrialState.COMPLETE
    bad = trials[0]  # scores -3.9 after one epoch, below the threshold
    assert bad.state == TrialState.PRUNED
    assert list(bad.intermediate_values) == [1]  # stopped after one of five epochs
    assert bad.value == pytest.approx(-3.9)  # a pruned trial keeps its last value
    assert summary(app)["pruned"] == [{"number": bad.number, "epochs": 1}]
    assert summary(app)["epochs_run"] == 5 + 5 + 1


def test_multi_objective_study_returns_the_feasible_pareto_front(app):
    sweep(
        app,
        "multi=true",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.direction=[maximize,minimize]",
        "x=choice(0,1,2,3,4)",
        "hydra.sweeper.constraints=['value_1 <= 1']",
    )
    trials = {t.params["x"]: t for t in study(app).trials}
    assert trials[2].constraints == {"value_1 <= 1": 1.0}  # recorded the Optuna way
    front = summary(app)["solutions"]
    # x=2 has the best score but breaks the budget; x=0 and x=1 trade score for cost.
    assert sorted(s["params"]["x"] for s in front) == [0, 1]
    assert all(v <= 0 for s in front for v in s["constraints"].values())


def test_failed_and_nan_jobs_are_failed_trials_and_the_sweep_goes_on(app):
    # One batch of 4 (n_jobs) with 2 failures: not more than half of the batch.
    sweep(
        app,
        "fail_when=3",
        "nan_when=0",
        "hydra.sweeper.max_failure_rate=0.5",
        "hydra.sweeper.n_jobs=4",
    )
    trials = {t.params["x"]: t for t in study(app).trials}
    assert trials[2].state == trials[1].state == TrialState.COMPLETE
    assert trials[3].state == trials[0].state == TrialState.FAIL
    failures = {f["params"]["x"]: f["reason"] for f in summary(app)["failures"]}
    assert failures == {3: "RuntimeError: boom at x=3", 0: "objective 0 is nan"}


def test_more_failures_than_max_failure_rate_stop_the_sweep(app):
    proc = sweep(app, "fail_when=3", "hydra.sweeper.max_failure_rate=0.0", ok=False)
    assert proc.returncode != 0
    line = "hydra.sweeper.max_failure_rate=0.0: 1 of the 1 trials of a batch failed"
    assert line in proc.stderr
    trials = study(app).trials
    assert trials[-1].params == {"x": 3} and trials[-1].state == TrialState.FAIL
    assert len(trials) < 4  # nothing was launched after the failure
    assert summary(app)["counts"]["fail"] == 1


def test_a_job_killed_without_a_result_fails_its_trial_which_is_retried_once(app):
    # submitit's local launcher, as on SLURM: one job per trial; trial 1's job is killed.
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ["epochs=4", "sleep=1.0", "hydra/launcher=submitit_local"]
    args += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    proc = start(app, *args, "hydra.sweeper.max_failure_rate=0.5", log="sweep.out")
    started = app / "multirun" / "toy" / "trial_1" / "started"
    deadline = time.time() + 120
    while not (started.exists() and started.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(int(started.read_text().split()[0]), signal.SIGKILL)
    assert proc.wait(timeout=120) == 0, (app / "sweep.out").read_text()[-3000:]
    trials = study(app).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed, retry = trials[1], trials[2]
    # The job is submitit's controller process; it outlives the killed task and ends normally.
    assert re.fullmatch(r"local job \d+ FINISHED; retried", failed.user_attrs["reason"])
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == 1
    assert summary(app)["counts"] == {
        "complete": 2,
        "pruned": 0,
        "fail": 0,
        "running": 0,
        "waiting": 0,
        "retried": 1,
    }


def test_running_the_same_command_again_resumes_the_study(app):
    sweep(app, "hydra.sweeper.n_trials=2")
    first = [t.params for t in study(app).trials]
    again = sweep(app, "hydra.sweeper.n_trials=3")
    assert again.stdout.count("Launching 1 jobs") == 1  # only the one trial still to run
    trials = study(app).trials
    assert [t.params for t in trials[:2]] == first and trials[2].params not in first
    assert all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_and_run_again_ends_with_n_trials(app):
    args = ["epochs=20", "sleep=0.25", "hydra.sweeper.n_trials=3"]
    first = start(app, *args, log="first.log")
    marker = app / "multirun/toy/trial_1/started"
    deadline = time.time() + 180
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    sweep(app, *args)
    trials = study(app).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    stale, retry = trials[1], trials[2]  # the retry is taken before any new trial
    assert stale.state == TrialState.FAIL and "stale" in stale.user_attrs["reason"]
    assert retry.params == stale.params and retry.system_attrs["failed_trial"] == 1
    kept = counted(trials)  # all but the stale trial, which its retry replaced
    assert len(kept) == 3 and all(t.state == TrialState.COMPLETE for t in kept)
    assert summary(app)["counts"] == dict(
        complete=3, pruned=0, fail=0, running=0, waiting=0, retried=1
    )
    # The retry ran in the killed trial's directory (where a checkpoint would be).
    assert len((app / "multirun/toy/trial_1/started").read_text().split()) == 2


@pytest.mark.slow
def test_three_sweeps_on_one_storage_finish_exactly_n_trials(app):
    args = ["epochs=2", "sleep=0.2", "hydra.sweeper.n_trials=7", "x=range(0,9)"]
    procs = [start(app, *args, log=f"worker{i}.log") for i in range(3)]
    for p in procs:
        assert p.wait(timeout=300) == 0, (app / "worker0.log").read_text()[-2000:]
    trials = study(app).trials
    assert len(trials) == 7 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params["x"] for t in trials}) == 7  # the grid never ran a point twice
    launched = sum((app / f"worker{i}.log").read_text().count("Launching 1 jobs") for i in range(3))
    assert launched == 7
    runs = [(app / "multirun/toy" / f"trial_{n}" / "started").read_text() for n in range(7)]
    assert all(len(r.split()) == 1 for r in runs)  # no trial ran twice


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_jobs_in_other_processes_report_to_their_trial_and_are_pruned(app, launcher):
    sweep(
        app,
        f"hydra/launcher={launcher}",
        "hydra.sweeper.n_jobs=2",
        "epochs=4",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=-2.0",
        *(
            ["hydra.launcher.n_jobs=2"]
            if launcher == "joblib"
            else ["hydra.launcher.timeout_min=10"]
        ),
    )
    trials = {t.params["x"]: t for t in study(app).trials}
    sweeper_pid = trials[2].system_attrs["van_ablate.worker"]["pid"]
    job_pids = {
        int((app / "multirun/toy" / f"trial_{t.number}" / "started").read_text())
        for t in trials.values()
    }
    assert sweeper_pid not in job_pids  # the jobs ran in other processes
    assert trials[0].state == TrialState.PRUNED and list(trials[0].intermediate_values) == [1]
    assert all(trials[x].state == TrialState.COMPLETE for x in (1, 2, 3))
    assert sorted(trials[2].intermediate_values) == [1, 2, 3, 4]


def test_the_sweep_summary_goes_to_wandb_in_the_study_group(tmp_path, monkeypatch):
    from van_ablate.sweep.summary import log_to_wandb, summarize

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    demo = optuna.create_study(study_name="demo", direction="maximize")
    demo.optimize(lambda t: t.suggest_int("x", 0, 4), n_trials=3)
    result = summarize(demo, ["best.val_top1"], 3, "memory")
    logger = OmegaConf.create({"project": "p", "entity": None, "mode": "offline"})
    log_to_wandb(result, logger, tmp_path)
    logged = (b"demo-summary", b"counts/complete", b"sweep", b"best.val_top1")
    data = offline_wandb_record(tmp_path / "wandb", logged)
    for needle in logged:
        assert needle in data, needle


def test_a_study_with_no_feasible_trial_says_which_constraint_broke_and_by_how_much(
    tmp_path, monkeypatch, caplog
):
    from van_ablate.sweep.summary import log_to_wandb, report, summarize

    monkeypatch.setenv("WANDB_MODE", "offline")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    demo = optuna.create_study(study_name="nas", directions=["maximize", "minimize"])
    for macs in (3.0e9, 1.5e9):
        trial = demo.ask()
        trial.set_constraint("complexity.macs <= 1e+09", macs - 1.0e9)
        demo.tell(trial, [0.5, macs])
    result = summarize(demo, ["best.val_top1", "complexity.macs"], 2, "memory")
    assert result["solutions"] == []
    assert result["no_feasible_trial"] == {
        "finished": 2,
        "broken": {"complexity.macs <= 1e+09": {"trials": 2, "least_excess": 0.5e9}},
    }
    with caplog.at_level("INFO"):
        report(result)
    assert (
        "No feasible trial: all 2 finished trials broke a constraint: complexity.macs <= 1e+09 "
        "broken by 2 (closest missed by 5e+08)" in caplog.text
    )
    assert "Pareto front" not in caplog.text
    logger = OmegaConf.create({"project": "p", "entity": None, "mode": "offline"})
    log_to_wandb(result, logger, tmp_path)  # used to raise KeyError: 'best_trial'


def test_a_failed_trial_being_retried_counts_against_max_failure_rate_only_once_its_retry_fails():
    from types import SimpleNamespace

    from van_ablate.sweep import coordinator as co
    from van_ablate.sweep.sweeper import SweepAborted, _check_failures

    study = optuna.create_study()
    storage = study._storage
    plan = SimpleNamespace(settings=SimpleNamespace(max_failure_rate=0.0))
    first = study.ask()
    first.suggest_int("x", 0, 9)
    frozen = storage.get_trial(co.trial_id_of(storage, study, first.number))
    assert co.fail(study, storage, frozen, "SLURM job 7_0 NODE_FAIL")  # failed, retry enqueued
    failed = study.trials[first.number]
    assert failed.state == TrialState.FAIL
    _check_failures(plan, [failed], study.trials)  # being retried: no abort

    retry = study.ask()
    assert retry.params == first.params
    study.tell(retry, state=TrialState.FAIL)  # the retry fails as well
    with pytest.raises(SweepAborted, match="max_failure_rate"):
        _check_failures(plan, [study.trials[retry.number]], study.trials)
