"""Optuna sweeps of the real training app (``python -m van_ablate -m``) and the ready studies.

Jobs train van_proxy for one epoch on a few dozen built-in images (32 px), so a trial takes
seconds. The studies in ``experiments/`` are checked by composing them with Hydra at both
scales and validating what the sweeper would run, without training. The studies are found
through the app's search path (``pkg://van_ablate.experiments``), with no ``--config-dir``.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import TINY_RUN, run_app
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.van_ablate_sweeper.config import VanOptunaSweeperConf
from van_ablate.analysis.report import startup_trials
from van_ablate.config import CONF_PACKAGE
from van_ablate.sweep.storage import JOURNAL_NAME, open_storage
from van_ablate.sweep.sweeper import plan

TINY_DATA = ["data.num_train=48", "data.num_val=24"]


def sweep_app(sweep_dir: Path, *args: str, ok: bool = True):
    base = ["hydra/sweeper=van_optuna", f"hydra.sweep.dir={sweep_dir}", *TINY_RUN, *TINY_DATA]
    if not any(a.startswith(("hydra.sweeper.direction=", "+study=")) for a in args):
        base.append("hydra.sweeper.direction=maximize")  # best.val_top1 needs it set
    proc = run_app(["-m", *base, *args], cwd=sweep_dir.parent)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def load(sweep_dir: Path, name: str) -> optuna.Study:
    storage = open_storage(str(sweep_dir / JOURNAL_NAME))
    return optuna.load_study(study_name=name, storage=storage)


def test_a_tpe_study_of_the_training_app_completes_and_writes_its_summary(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_app(
        sweep_dir,
        "hydra.sweeper.study_name=k",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=0",
        "lka.kernel_size=choice(7,21)",
        "train.epochs=2",
    )
    trials = load(sweep_dir, "k").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        results = json.loads((sweep_dir / f"trial_{t.number}" / "results.json").read_text())
        assert results["trial"] == {"study_name": "k", "number": t.number}
        assert results["lka"]["kernel_size"] == t.params["lka.kernel_size"]
        assert t.value == pytest.approx(results["best"]["val_top1"])
        curve = [e["val_top1"] for e in results["epochs"]]
        assert [t.intermediate_values[e] for e in (1, 2)] == pytest.approx(curve)
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert summary["best_value"] == pytest.approx(max(t.value for t in trials))
    assert summary["counts"]["complete"] == 2 and summary["epochs_run"] == 4


def test_a_diverging_training_job_is_a_failed_trial_and_the_sweep_completes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_app(
        sweep_dir,
        "hydra.sweeper.study_name=lr",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.max_failure_rate=0.5",
        "hydra.sweeper.n_jobs=2",  # one batch: 1 failure of 2 is not more than half
        "train.lr=choice(1e-3,1e30)",
    )
    trials = {t.params["train.lr"]: t for t in load(sweep_dir, "lr").trials}
    assert trials[1e-3].state == TrialState.COMPLETE
    assert trials[1e30].state == TrialState.FAIL
    assert trials[1e30].user_attrs["reason"].startswith("diverged: loss became non-finite")
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert [f["params"] for f in summary["failures"]] == [{"train.lr": 1e30}]


def test_bad_sweeper_input_ends_in_one_line_before_any_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = sweep_app(sweep_dir, "hydra.sweeper.direction=[maximize,minimize]", ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: hydra.sweeper.direction=['maximize', 'minimize']: needs one direction per "
        "objective ['best.val_top1'] (1)"
    ]
    assert not list(sweep_dir.glob("trial_*"))


def test_the_nas_study_searches_lka_and_sizes_and_returns_a_pareto_front(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_app(
        sweep_dir,
        "+study=nas",
        "hydra.sweeper.n_trials=3",
        *TINY_RUN,  # the study's scale=proxy sets bigger data and more epochs
        *TINY_DATA,
    )
    study = load(sweep_dir, "nas_van_proxy")
    assert len(study.trials) == 3
    for t in study.trials:
        results = json.loads((sweep_dir / f"trial_{t.number}" / "results.json").read_text())
        assert results["lka"]["kernel_size"] == t.params["lka.kernel_size"]
        assert results["config"]["model"]["depths"][2] == t.params["model.depths.2"]
        assert "complexity.macs <= 1e+07" in t.constraints  # the budget at the proxy's 64 px
        if t.state == TrialState.COMPLETE:
            assert t.values == [results["best"]["val_top1"], results["complexity"]["macs"]]
    summary = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert summary["objective"] == ["best.val_top1", "complexity.macs"]
    front = summary["solutions"]
    assert front and all(v <= 0 for s in front for v in s["constraints"].values())
    # the sweep's config beside it, as Hydra's own sweeper leaves it: the report's startup count
    assert startup_trials(str(sweep_dir / "optuna_journal.log")) == 8  # NSGA-II's population


@pytest.fixture
def compose_study():
    import van_ablate.__main__  # noqa: F401  (registers the schema and the run-name resolver)

    GlobalHydra.instance().clear()

    def _compose(*overrides: str):
        with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=True)

    yield _compose
    GlobalHydra.instance().clear()


STUDIES = ["table3", "kernel_size", "kernel_size_grid", "nas", "layer_scale"]
SCALES = ["proxy", "paper", "paper launcher=local"]
# Fashion-MNIST is a scale of the two studies that compare rows, table3 and kernel_size
STUDY_SCALES = [(s, c) for s in STUDIES for c in SCALES]
STUDY_SCALES += [("table3", "proxy_fashion"), ("kernel_size", "proxy_fashion")]


@pytest.mark.parametrize("study, scale", STUDY_SCALES)
def test_every_ready_study_composes_and_passes_the_sweeper_checks(
    compose_study, tmp_path, study, scale
):
    cfg = compose_study(f"+study={study}", *f"scale={scale}".split())
    launcher = cfg.hydra.launcher._target_.rsplit(".", 1)[-1]
    assert launcher == ("SlurmLauncher" if scale == "paper" else "BasicLauncher")
    settings = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    settings = {k: v for k, v in settings.items() if not k.startswith("_")}
    p = plan(VanOptunaSweeperConf(**settings), cfg, [], tmp_path)
    adaptive = study in ("table3", "kernel_size")  # one study per data set: its name says it
    name = f"{study}_{cfg.model.name}" + (f"_{cfg.data.name}" if adaptive else "")
    assert p.study_name == name
    assert cfg.model.name == ("van_proxy" if scale.startswith("proxy") else "van_b0")
    expected = {
        "table3": 40,  # adaptive: the trial budget (8 rows x 6 seeds at most)
        "kernel_size": 20,  # adaptive: 4 rows x 6 seeds at most, capped
        "kernel_size_grid": 5 * 5,
        "layer_scale": 2 * 3,
    }
    if adaptive:
        assert p.sampler.rule.rows[0] in ("baseline", 7) and p.sampler.rule.min_seeds == 3
    if study in expected:
        assert p.n_trials == expected[study]
    else:
        assert [c.field for c in p.constraints] == ["complexity.macs"]
        assert p.pruning_study == f"nas_{cfg.model.name}.pruning"


ADAPTIVE_APP = [
    "hydra/sweeper/sampler=adaptive",
    "hydra.sweeper.sampler.min_seeds=2",
    "hydra.sweeper.sampler.max_seeds=3",
    "hydra.sweeper.n_trials=6",
    "+ablation=choice(baseline,dense_conv)",
    "seed=range(0,3)",
]


def test_a_dry_run_prints_the_forecast_and_launches_nothing(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = sweep_app(sweep_dir, *ADAPTIVE_APP, "hydra.sweeper.dry_run=true")
    log = proc.stdout + proc.stderr
    assert "Forecast (" in log
    assert "+ablation=dense_conv:" in log and "2 to 3 trials" in log
    assert "expected " in log and "worst case" in log
    assert not list(sweep_dir.glob("trial_*")) and not (sweep_dir / JOURNAL_NAME).exists()


def test_a_study_whose_forecast_exceeds_its_budget_is_refused_in_one_line(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = sweep_app(sweep_dir, *ADAPTIVE_APP, "hydra.sweeper.budget_h=1e-6", ok=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: hydra.sweeper.budget_h=1e-06: the forecast for one round of")
    assert not list(sweep_dir.glob("trial_*")) and not (sweep_dir / JOURNAL_NAME).exists()


def test_an_adaptive_sweep_stops_when_every_row_has_stopped_and_trains_no_point_twice(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_app(sweep_dir, *ADAPTIVE_APP, "hydra.sweeper.study_name=adaptive")
    study = load(sweep_dir, "adaptive")
    points = [(t.params["+ablation"], t.params["seed"]) for t in study.trials]
    assert len(points) == len(set(points)) and 4 <= len(points) <= 6
    assert {("baseline", 0), ("baseline", 1), ("dense_conv", 0), ("dense_conv", 1)} <= set(points)


def test_the_removed_motpe_sampler_is_refused_saying_so(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = sweep_app(sweep_dir, "hydra/sweeper/sampler=motpe", "seed=choice(0,1)", ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: hydra/sweeper/sampler='motpe': MOTPESampler was removed in Optuna 4; tpe handles "
        "several objectives (sampler=tpe)"
    ]
    assert not list(sweep_dir.glob("trial_*"))


def test_a_ready_adaptive_study_runs_as_a_grid_when_asked(compose_study, tmp_path):
    # the adaptive settings live in the sampler option, so another option replaces them whole
    cfg = compose_study("+study=table3", "hydra/sweeper/sampler=grid")
    settings = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    settings = {k: v for k, v in settings.items() if not k.startswith("_")}
    p = plan(VanOptunaSweeperConf(**settings), cfg, [], tmp_path)
    assert type(p.sampler).__name__ == "GridSampler" and p.n_trials == 40  # of 8 rows x 6 seeds
    kernel = compose_study("+study=kernel_size")
    assert kernel.hydra.sweeper.sampler.row_param == "lka.kernel_size"
    assert (
        kernel.hydra.sweeper.sampler.baseline == 21 and kernel.hydra.sweeper.sampler.min_seeds == 3
    )


@pytest.mark.slow  # a sweep stopped in its first trial, then resumed: about a minute
def test_a_stop_signal_stops_a_local_sweep_and_its_rerun_resumes_the_stopped_trial(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import run_env, write_image_folder
    from test_resume import ARGS, PER_CLASS_LONG

    from van_ablate.sweep import coordinator as co

    root = write_image_folder(tmp_path / "images", per_class=PER_CLASS_LONG)  # 48 steps an epoch
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=van_optuna", "hydra/sweeper/sampler=grid", *ARGS]
    args += [f"data.root={root}", f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.study_name=s"]
    args += ["hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=2"]
    args += ["lka.kernel_size=choice(7,21)"]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "van_ablate", *args],
        cwd=tmp_path,
        env=run_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = sweep_dir / "trial_0" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and sweep.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # into epoch 2 of trial 0
    sweep.send_signal(signal.SIGTERM)
    _, err = sweep.communicate(timeout=240)
    assert sweep.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped" in err and "Traceback" not in err
    trials = load(sweep_dir, "s").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # no trial 1 ran
    assert "stopped by SIGTERM" in trials[0].user_attrs[co.REASON]

    rerun = run_app(args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = load(sweep_dir, "s").trials
    assert co.state_counts(trials)["complete"] == 2
    assert sorted(t.params["lka.kernel_size"] for t in co.counted(trials)) == [7, 21]
    log = (sweep_dir / "trial_0" / "train.log").read_text()
    assert "resuming" in log and "batches of epoch 2" in log
    assert json.loads((sweep_dir / "trial_0" / "results.json").read_text())["status"] == "completed"
