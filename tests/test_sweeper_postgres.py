"""The sweeper on a real PostgreSQL server (``tests/services.py``), with the toy app of
``test_sweeper``: sweep processes started together on one fresh study, a worker killed
mid-trial, a resumed study whose space changed, and workers that share a seed.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_sweeper import start, sweep, write_app
from test_sweeper_app import sweep_app
from test_sweeper_inputs import make_plan

from van_ablate.sweep.coordinator import counted
from van_ablate.sweep.storage import open_storage
from van_ablate.sweep.sweeper import open_study


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_app(tmp_path)


RANDOM = ["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0", "x=interval(0,4)"]


def study_at(url: str, name: str = "toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def run_together(app, url: str, n: int, *args: str) -> list[str]:
    procs = [start(app, f"hydra.sweeper.storage='{url}'", *args, log=f"w{i}.log") for i in range(n)]
    logs = []
    for i, p in enumerate(procs):
        assert p.wait(timeout=300) == 0, (app / f"w{i}.log").read_text()[-3000:]
        logs.append((app / f"w{i}.log").read_text())
    return logs


def test_four_sweeps_started_together_on_a_fresh_postgres_study_share_it(app, pg_url):
    logs = run_together(app, pg_url, 4, "epochs=1", "hydra.sweeper.n_trials=8", *RANDOM)
    trials = study_at(pg_url).trials
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sum(log.count("Launching 1 jobs") for log in logs) == 8  # none lost, none twice
    # Same sampler.seed=0, yet every process asked its own points.
    assert len({t.params["x"] for t in trials}) == 8
    assert sorted(int(log.split("process ")[1].split()[0]) for log in logs) == [0, 1, 2, 3]


@pytest.mark.slow
def test_four_sweeps_started_together_finish_exactly_n_trials_every_time(app, postgres):
    for attempt in range(3):
        url = postgres.new_database(f"repeat_{attempt}")
        run_together(app, url, 4, "epochs=2", "sleep=0.1", "hydra.sweeper.n_trials=6", *RANDOM)
        trials = study_at(url).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, attempt


@pytest.mark.slow
def test_one_process_with_a_seed_asks_the_same_points_every_time(app, postgres):
    asked = []
    for attempt in range(2):
        url = postgres.new_database(f"seeded_{attempt}")
        sweep(
            app, f"hydra.sweeper.storage='{url}'", "epochs=1", "hydra.sweeper.n_trials=3", *RANDOM
        )
        asked.append([t.params for t in study_at(url).trials])
    assert asked[0] == asked[1]


def test_resuming_a_postgres_study_with_another_space_is_refused_before_any_job(tmp_path, pg_url):
    made = make_plan(tmp_path, storage=pg_url, params={"lka.kernel_size": "choice(7, 21)"})
    open_study(made, open_storage(pg_url))
    sweep_dir = tmp_path / "sweep"
    proc = sweep_app(
        sweep_dir,
        f"hydra.sweeper.storage='{pg_url}'",
        "hydra.sweeper.study_name=s",
        "lka.kernel_size=choice(7,28)",
        ok=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: hydra.sweeper.params='")
    assert f"study 's' in {pg_url} was created with another search space" in line
    assert not list(sweep_dir.glob("trial_*")) and study_at(pg_url, "s").trials == []


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_noticed_and_its_trial_retried_once(app, pg_url):
    args = [
        f"hydra.sweeper.storage='{pg_url}'",
        "hydra.sweeper.stale_after_s=4",
        "hydra.sweeper.n_trials=3",
        "epochs=12",
        "sleep=0.25",
    ]
    victim = start(app, *args, log="victim.log")
    marker = app / "multirun/toy/trial_0/started"
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # mid-trial: a few epochs reported
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    sweep(app, *args)
    trials = study_at(pg_url).trials
    killed = trials[0]
    assert killed.state == TrialState.FAIL
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["retry_history"] == [0]
    kept = counted(trials)
    assert len(kept) == 3 and all(t.state == TrialState.COMPLETE for t in kept)
    # The retry ran in the killed trial's directory, where its checkpoint would be.
    assert len(marker.read_text().split()) == 2


@pytest.mark.parametrize("hidden", [None, "psycopg"], ids=["both-installed", "psycopg2-only"])
def test_a_postgresql_url_uses_psycopg_and_psycopg2_where_only_that_is_installed(
    pg_url, hidden, monkeypatch
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a)
    )
    storage = open_storage(pg_url)
    assert pg_url.startswith("postgresql://")
    assert storage.engine.dialect.driver == ("psycopg2" if hidden else "psycopg")
    study = optuna.create_study(study_name="driver", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state for t in study_at(pg_url, "driver").trials] == [TrialState.COMPLETE] * 2


def test_adaptive_workers_sharing_a_postgres_study_never_train_the_same_row_and_seed(app, pg_url):
    config = (app / "config.yaml").read_text()
    config = config.replace("x: 0\n", "x: 0\nrow: a\nseed: 0\n")
    config = config.replace("      x: choice(2, 3, 0, 1)\n", "      row: choice(a, b, c)\n")
    (app / "config.yaml").write_text(config)
    adaptive = ["hydra/sweeper/sampler=adaptive", "hydra.sweeper.sampler.row_param=row"]
    adaptive += ["hydra.sweeper.sampler.baseline=a", "seed=range(0,6)", "sleep=0.2"]
    adaptive += ["hydra.sweeper.n_trials=12"]
    run_together(app, pg_url, 3, *adaptive)
    points = [(t.params["row"], t.params["seed"]) for t in study_at(pg_url).trials]
    assert len(points) == len(set(points)) <= 12  # no (row, seed) twice, within the budget
    assert {(r, s) for r in "abc" for s in range(3)} <= set(points)  # the first round, whole
    # every row scores the same on every seed: decided at 3 seeds; more only where a worker
    # asked while that row's first round was still running
    assert all(s < 6 for _, s in points)
