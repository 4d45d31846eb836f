"""Configs written for the official hydra-optuna-sweeper run unchanged but for the sweeper's name.

Modeled on the official plugin's example apps: a sphere, a two-objective function and a custom
search space, each a real ``@hydra.main`` program written into a temp dir and run as a
subprocess; the semantics of ``range``, ``direction``, ``max_failure_rate`` and sampler
arguments are checked against what the official plugin does with the same config.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.van_ablate_sweeper.config import SAMPLERS, VanOptunaSweeperConf
from van_ablate.errors import ConfigError
from van_ablate.sweep.storage import JOURNAL_NAME, open_storage
from van_ablate.sweep.sweeper import plan

SPHERE = """
import hydra

@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg):
    if cfg.get("error", False) or cfg.x == cfg.get("fail_at", None):
        raise RuntimeError("cfg.error is True")
    return cfg.x**2 + cfg.y**2

if __name__ == "__main__":
    sphere()
"""

# The official example's config; only the sweeper's name differs.
SPHERE_CONFIG = """
defaults:
  - override hydra/sweeper: van_optuna
  - override hydra/sweeper/sampler: tpe

hydra:
  sweeper:
    sampler:
      seed: 123
    direction: minimize
    study_name: sphere
    storage: null
    n_trials: 6
    n_jobs: 1
    max_failure_rate: 0.0
    params:
      x: range(-5.5, 5.5, step=0.5)
      y: choice(-5 ,0 ,5)

x: 1
y: 1
z: 1

error: false
fail_at: null
"""

MULTI = """
import hydra

@hydra.main(version_base=None, config_path="multi-objective-conf", config_name="config")
def binh_and_korn(cfg):
    v0 = 4 * cfg.x**2 + 4 * cfg.y**2
    v1 = (cfg.x - 5) ** 2 + (cfg.y - 5) ** 2
    return v0, v1

if __name__ == "__main__":
    binh_and_korn()
"""

MULTI_CONFIG = """
defaults:
  - override hydra/sweeper: van_optuna
  - override hydra/sweeper/sampler: nsgaii

hydra:
  sweeper:
    sampler:
      seed: 123
    direction: [minimize, minimize]
    study_name: multi-objective
    storage: null
    n_trials: 6
    n_jobs: 1
    params:
      x: range(0, 5, step=0.5)
      y: range(0, 3, step=0.5)

x: 1
y: 1
"""

CUSTOM = """
import hydra

@hydra.main(version_base=None, config_path="custom-search-space", config_name="config")
def multi_dimensional_sphere(cfg):
    return cfg.w**2 + cfg.x**2 + cfg.y**2 + cfg.z**2

def configure(cfg, trial):
    x_value = trial.params["x"]
    trial.suggest_float(
        "z", x_value - cfg.max_z_difference_from_x, x_value + cfg.max_z_difference_from_x
    )
    trial.suggest_float("+w", 0.0, 1.0)  # +w: w is a new key

if __name__ == "__main__":
    multi_dimensional_sphere()
"""

CUSTOM_CONFIG = """
defaults:
  - override hydra/sweeper: van_optuna

hydra:
  sweeper:
    sampler:
      seed: 123
    direction: minimize
    study_name: custom-search-space
    storage: null
    n_trials: 4
    n_jobs: 1
    params:
      x: range(-5.5, 5.5, 0.5)
      y: choice(-5, 0, 5)
    custom_search_space: custom-search-space-objective.configure

x: 1
y: 1
z: 100
max_z_difference_from_x: 0.5
"""


def write_app(root: Path, script: str, code: str, conf_dir: str, config: str) -> Path:
    (root / script).write_text(textwrap.dedent(code))
    (root / conf_dir).mkdir(parents=True, exist_ok=True)
    (root / conf_dir / "config.yaml").write_text(config)
    return root


def sweep(root: Path, script: str, *overrides: str, ok: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, script, "-m", "hydra.sweep.dir=multirun", *overrides]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def load(root: Path, name: str) -> optuna.Study:
    storage = open_storage(str(root / "multirun" / JOURNAL_NAME))
    return optuna.load_study(study_name=name, storage=storage)


def results(root: Path) -> dict:
    return yaml.safe_load((root / "multirun" / "optimization_results.yaml").read_text())


@pytest.fixture
def sphere(tmp_path: Path) -> Path:
    return write_app(tmp_path, "sphere.py", SPHERE, "conf", SPHERE_CONFIG)


def test_the_official_sphere_example_runs_with_its_distributions(sphere):
    sweep(sphere, "sphere.py")
    study = load(sphere, "sphere")
    assert [d.name for d in study.directions] == ["MINIMIZE"]
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    # range(-5.5, 5.5, step=0.5) reaches 5.5, as the official plugin's distribution does.
    assert trials[0].distributions == {
        "x": FloatDistribution(-5.5, 5.5, step=0.5),
        "y": CategoricalDistribution((-5, 0, 5)),
    }
    best = min(trials, key=lambda t: t.value)
    assert results(sphere)["best_value"] == pytest.approx(best.value)
    assert results(sphere)["best_params"] == best.params


def test_without_a_direction_a_sweep_minimizes_as_the_official_plugin(sphere):
    config = (sphere / "conf" / "config.yaml").read_text().replace("    direction: minimize\n", "")
    (sphere / "conf" / "config.yaml").write_text(config)
    sweep(sphere, "sphere.py", "hydra.sweeper.n_trials=2")
    assert [d.name for d in load(sphere, "sphere").directions] == ["MINIMIZE"]


def test_the_grid_sampler_walks_a_range_short_of_its_stop(sphere):
    sweep(sphere, "sphere.py", "hydra/sweeper/sampler=grid", "x=range(-1, 2)", "y=choice(0, 5)")
    trials = load(sphere, "sphere").trials
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [
        (x, y) for x in (-1, 0, 1) for y in (0, 5)
    ]  # n_trials 6 = the grid's size; 2 is not a grid point, as the official plugin's grid


def test_official_sampler_arguments_are_set_without_a_plus(sphere):
    proc = sweep(sphere, "sphere.py", "hydra.sweeper.sampler.n_ei_candidates=30", "x=1")
    assert "Could not override" not in proc.stderr
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(sphere / "conf"), version_base=None):
        cfg = compose(
            "config",
            ["hydra.sweeper.sampler.n_ei_candidates=30", "hydra.sweeper.sampler.gamma=null"],
            return_hydra_config=True,
        )
    settings = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    settings = {k: v for k, v in settings.items() if not k.startswith("_") and k != "defaults"}
    settings["study_name"] = "sphere"
    p = plan(VanOptunaSweeperConf(**settings), cfg, [], sphere)
    assert p.sampler._n_ei_candidates == 30
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.sampler.n_ei_candidate=30: not an"):
        settings["sampler"] = {**settings["sampler"], "n_ei_candidate": 30}
        plan(VanOptunaSweeperConf(**settings), cfg, [], sphere)


def test_max_failure_rate_is_counted_per_batch(sphere):
    # Batches of 2: x=0 fails alone in its batch (1 of 2 is not more than 0.5) and the sweep
    # goes on; with a rate of 0.4 the same batch stops it, as the official plugin.
    grid = ["hydra/sweeper/sampler=grid", "x=choice(1, 0, 2, 3)", "y=0", "fail_at=0"]
    sweep(
        sphere, "sphere.py", *grid, "hydra.sweeper.n_jobs=2", "hydra.sweeper.max_failure_rate=0.5"
    )
    states = [t.state for t in load(sphere, "sphere").trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 3
    again = [*grid, "hydra.sweeper.n_jobs=2", "hydra.sweeper.max_failure_rate=0.4"]
    proc = sweep(sphere, "sphere.py", *again, "hydra.sweeper.study_name=strict", ok=False)
    assert proc.returncode != 0
    assert "hydra.sweeper.max_failure_rate=0.4: 1 of the 2 trials of a batch failed" in proc.stderr


def test_the_official_multi_objective_example_returns_a_pareto_front(tmp_path):
    app = write_app(tmp_path, "multi-objective.py", MULTI, "multi-objective-conf", MULTI_CONFIG)
    sweep(app, "multi-objective.py")
    study = load(app, "multi-objective")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.trials[0].distributions == {
        "x": FloatDistribution(0.0, 5.0, step=0.5),
        "y": FloatDistribution(0.0, 3.0, step=0.5),
    }
    front = results(app)["solutions"]
    assert front and all(len(s["values"]) == 2 for s in front)
    assert {s["params"]["x"] for s in front} <= {t.params["x"] for t in study.trials}


def test_the_official_custom_search_space_example_adds_its_parameters(tmp_path):
    script = "custom-search-space-objective.py"
    app = write_app(tmp_path, script, CUSTOM, "custom-search-space", CUSTOM_CONFIG)
    sweep(app, script)
    for t in load(app, "custom-search-space").trials:
        assert t.state == TrialState.COMPLETE
        assert set(t.params) == {"x", "y", "z", "+w"}
        assert abs(t.params["z"] - t.params["x"]) <= 0.5
        expected = t.params["+w"] ** 2 + t.params["x"] ** 2 + t.params["y"] ** 2
        assert t.value == pytest.approx(expected + t.params["z"] ** 2)


def test_range_becomes_the_official_distributions(tmp_path):
    base = VanOptunaSweeperConf(
        sampler={**SAMPLERS["random"], "seed": 0},
        pruner={},
        direction="minimize",
        study_name="s",
        n_trials=4,
        n_jobs=1,
        max_failure_rate=0.0,
    )
    params = {
        "a": "range(1, 3)",
        "b": "range(1, 7, step=2)",
        "c": "range(0.5, 5.5, step=1)",
        "d": "range(-5.5, 5.5, step=0.5)",
        "e": "shuffle(range(1, 3))",
    }
    base.params = params
    d = plan(base, OmegaConf.create({}), [], tmp_path).space.distributions
    assert d["a"] == IntDistribution(1, 3)
    assert d["b"] == IntDistribution(1, 7, step=2)
    assert d["c"] == FloatDistribution(0.5, 5.5, step=1.0)
    assert d["d"] == FloatDistribution(-5.5, 5.5, step=0.5)
    assert isinstance(d["e"], CategoricalDistribution) and set(d["e"].choices) == {1, 2}


def test_our_training_app_refuses_a_missing_direction_for_accuracy(tmp_path):
    settings = VanOptunaSweeperConf(
        sampler=SAMPLERS["tpe"],
        pruner={},
        direction=None,
        study_name="s",
        n_trials=2,
        n_jobs=1,
        max_failure_rate=0.0,
        params={"lka.kernel_size": "choice(7, 21)"},
    )
    accuracy = OmegaConf.create({"objective": ["best.val_top1"]})
    with pytest.raises(ConfigError) as err:
        plan(settings, accuracy, [], tmp_path)
    message = str(err.value)
    assert message.startswith("hydra.sweeper.direction=None: must be set")
    assert "best.val_top1" in message and "\n" not in message
    macs = OmegaConf.create({"objective": ["complexity.macs"]})
    assert plan(settings, macs, [], tmp_path).directions == ["minimize"]


def test_the_ready_nas_space_searches_the_same_depths_as_before(tmp_path):
    """Depths written for the former stop-excluded range keep their values."""
    space = yaml.safe_load(
        (Path(__file__).parent.parent / "experiments/nas_space/proxy.yaml").read_text()
    )
    settings = VanOptunaSweeperConf(
        sampler=SAMPLERS["random"],
        pruner={},
        direction="minimize",
        study_name="s",
        n_trials=2,
        n_jobs=1,
        max_failure_rate=0.0,
        params=space["hydra"]["sweeper"]["params"],
    )
    d = plan(settings, OmegaConf.create({}), [], tmp_path).space.distributions
    depths = [d[f"model.depths.{i}"] for i in range(4)]
    assert [(x.low, x.high) for x in depths] == [(1, 2), (1, 2), (1, 3), (1, 2)]


def test_sweep_returns_none_to_hydra_as_the_official_plugin(sphere, monkeypatch):
    from hydra.test_utils.test_utils import SweepTaskFunction

    monkeypatch.chdir(sphere)
    runner = SweepTaskFunction()
    runner.calling_file = str(sphere / "sphere.py")
    runner.config_path, runner.config_name = "conf", "config"
    runner.task_function = lambda cfg: cfg.x**2 + cfg.y**2
    runner.overrides = ["hydra.sweeper.n_trials=2"]
    runner.temp_dir = str(sphere / "multirun")
    with runner:
        assert runner.returns is None  # what Hydra's multirun got back from sweep()
        assert [t.state for t in load(sphere, "sphere").trials] == [TrialState.COMPLETE] * 2
