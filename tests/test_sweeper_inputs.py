"""What the van_optuna sweeper accepts, and the one-line errors for what it does not.

These run in-process on :func:`plan` / :func:`open_study` (what the sweeper does before any
job starts) with plain settings, the way Hydra hands them to the sweeper.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.van_ablate_sweeper.config import PRUNERS, SAMPLERS, VanOptunaSweeperConf
from van_ablate.errors import ConfigError
from van_ablate.sweep.coordinator import SWEEP
from van_ablate.sweep.space import job_overrides, parse_space
from van_ablate.sweep.storage import open_storage
from van_ablate.sweep.sweeper import open_study, plan

APP_CONFIG = OmegaConf.create({"objective": ["best.val_top1"]})


def settings(**changes) -> VanOptunaSweeperConf:
    base = {
        "sampler": {**SAMPLERS["tpe"], "seed": None},
        "pruner": PRUNERS["none"],
        "direction": "maximize",
        "study_name": "s",
        "storage": None,
        "n_trials": 4,
        "n_jobs": 1,
        "max_failure_rate": 0.25,
        "params": {"lka.kernel_size": "choice(7, 21)"},
        "custom_search_space": None,
        "search_space": None,
        "constraints": [],
        "stale_after_s": 120.0,
    }
    return VanOptunaSweeperConf(**{**base, **changes})


def make_plan(tmp_path: Path, config=APP_CONFIG, arguments=(), **changes):
    return plan(settings(**changes), config, list(arguments), tmp_path)


def test_override_syntax_becomes_optuna_distributions():
    space = parse_space(
        {
            "a": "choice(7, 14, 21)",
            "b": "range(1, 4)",
            "c": "tag(log, interval(1e-4, 1e-1))",
            "d": "int(interval(1, 8))",
            "e": "range(0, 1, step=0.25)",
            "f": "choice([1,1,2,1],[2,2,4,2])",
            "g": "auto",
        }
    )
    d = space.distributions
    assert d["a"] == CategoricalDistribution((7, 14, 21))
    assert d["b"] == IntDistribution(1, 4)  # range() includes stop, as the official plugin
    assert d["c"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["d"] == IntDistribution(1, 8)
    assert d["e"] == FloatDistribution(0.0, 1.0, step=0.25)
    assert d["f"] == CategoricalDistribution(("[1,1,2,1]", "[2,2,4,2]"))
    assert space.fixed == {"g": "auto"}


def test_command_line_sweeps_replace_params_of_the_same_key():
    space = parse_space({"x": "choice(1, 2)", "y": "3"}, ["x=range(0,3)", "y=choice(5,6)"])
    assert space.distributions == {
        "x": IntDistribution(0, 3),
        "y": CategoricalDistribution((5, 6)),
    }
    assert space.fixed == {}


def test_every_sampler_and_pruner_group_option_builds_its_optuna_class(tmp_path):
    store = ConfigStore.instance()
    for name in SAMPLERS:
        node = store.load(f"hydra/sweeper/sampler/{name}.yaml").node
        one = name in ("cmaes", "adaptive")
        directions = ["maximize"] if one else ["maximize", "minimize"]
        config = OmegaConf.create(
            {"objective": ["best.val_top1", "complexity.macs"][: len(directions)]}
        )
        sampler = {**OmegaConf.to_container(node), "seed": 0}
        # the adaptive sampler chooses rows and seeds: its space has both axes
        axes = ["+ablation=choice(baseline,k7)", "seed=range(0,10)"] if name == "adaptive" else []
        params = None if name == "adaptive" else settings().params
        p = make_plan(
            tmp_path,
            config,
            sampler=sampler,
            direction=directions,
            arguments=axes,
            params=params,
            n_trials=20,
        )
        assert type(p.sampler) is get_class(node._target_)
    for name in PRUNERS:
        node = store.load(f"hydra/sweeper/pruner/{name}.yaml").node
        bound = {"lower": 50.0} if name == "threshold" else {}  # it needs one bound
        p = make_plan(tmp_path, pruner={**OmegaConf.to_container(node), **bound})
        assert type(p.pruner) is get_class(node._target_)


def test_a_grid_caps_n_trials_at_its_size(tmp_path):
    p = make_plan(
        tmp_path, sampler=SAMPLERS["grid"], n_trials=100, arguments=["seed=choice(0,1,2)"]
    )
    assert p.n_trials == 2 * 3


@pytest.mark.parametrize(
    ("changes", "key", "allowed"),
    [
        (
            dict(sampler={"_target_": "optuna.samplers.AnnealingSampler"}),
            "hydra.sweeper.sampler._target_",
            "must be one of optuna.samplers.TPESampler",
        ),
        (
            dict(sampler={**SAMPLERS["tpe"], "startup": 3}),
            "hydra.sweeper.sampler.startup",
            "allowed:",
        ),
        (
            dict(pruner={"_target_": "optuna.pruners.AshaPruner"}),
            "hydra.sweeper.pruner._target_",
            "must be one of optuna.pruners.NopPruner",
        ),
        (dict(params={"x": "choice(1, 2"}), "hydra.sweeper.params.x", "must be a fixed value"),
        (dict(params={"x": "tag(exp, interval(1, 2))"}), "hydra.sweeper.params.x", "tag"),
        (
            dict(params={"x": "interval(1.0, 2.0)"}, sampler=SAMPLERS["grid"]),
            "hydra.sweeper.params.x",
            "grid",
        ),
        (dict(direction=["maximize", "minimize"]), "hydra.sweeper.direction", "one direction per"),
        (dict(direction="up"), "hydra.sweeper.direction", "minimize, maximize"),
        (dict(n_trials=0), "hydra.sweeper.n_trials", ">= 1"),
        (dict(max_failure_rate=2.0), "hydra.sweeper.max_failure_rate", "[0, 1]"),
        (dict(constraints=["macs < 1e9"]), "hydra.sweeper.constraints", "<= <number>"),
        (dict(constraints=["macs <= 1e9"]), "hydra.sweeper.constraints", "complexity.macs"),
        (dict(search_space={"x": {"type": "int"}}), "hydra.sweeper.search_space", "params"),
        (dict(custom_search_space="no.such.fn"), "hydra.sweeper.custom_search_space", "fn(cfg"),
        (dict(sampler=SAMPLERS["cmaes"], direction=["maximize", "minimize"]), "sampler", "nsgaii"),
    ],
)
def test_bad_settings_fail_in_one_line_naming_key_and_what_is_allowed(
    tmp_path, changes, key, allowed
):
    config = APP_CONFIG
    if changes.get("direction") == ["maximize", "minimize"] and "sampler" in changes:
        config = OmegaConf.create({"objective": ["best.val_top1", "complexity.macs"]})
    with pytest.raises(ConfigError) as err:
        make_plan(tmp_path, config, **changes)
    message = str(err.value)
    assert "\n" not in message and key in message and allowed in message


def test_an_objective_that_is_not_a_results_field_is_refused(tmp_path):
    config = OmegaConf.create({"objective": ["epochs.-1.images_per_sec"]})
    with pytest.raises(ConfigError, match=r"^objective='epochs.-1.images_per_sec': must be one of"):
        make_plan(tmp_path, config)


def test_a_storage_that_cannot_be_opened_is_refused_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path}/missing/dir/study.db"
    with pytest.raises(ConfigError) as err:
        open_storage(url)
    assert str(err.value).startswith(f"hydra.sweeper.storage={url!r}: must be a journal file")
    assert "\n" not in str(err.value)


def test_resuming_with_another_search_space_or_directions_is_refused(tmp_path):
    storage = open_storage(str(tmp_path / "journal.log"))
    open_study(make_plan(tmp_path), storage)
    changed = make_plan(tmp_path, params={"lka.kernel_size": "choice(7, 21, 28)"})
    with pytest.raises(
        ConfigError, match=r"hydra.sweeper.params='lka.kernel_size'.*new study_name"
    ):
        open_study(changed, storage)
    config = OmegaConf.create({"objective": ["final.val_top1"]})
    with pytest.raises(ConfigError, match=r"^objective=\['final.val_top1'\]: study 's'"):
        open_study(make_plan(tmp_path, config), storage)
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.direction=\['minimize'\]"):
        open_study(make_plan(tmp_path, direction="minimize"), storage)
    same = make_plan(tmp_path, pruner=PRUNERS["median"])  # a new pruner is fine
    study = open_study(same, storage)
    assert isinstance(study, optuna.Study)


def test_a_study_swept_before_the_objective_key_was_renamed_resumes(tmp_path):
    storage = open_storage(str(tmp_path / "journal.log"))
    study_id = storage.get_study_id_from_name(open_study(make_plan(tmp_path), storage).study_name)
    sweep = storage.get_study_system_attrs(study_id)[SWEEP]
    sweep["objectives"] = sweep.pop("objective")  # as the previous sweeper stored it
    storage.set_study_system_attr(study_id, SWEEP, sweep)
    config = OmegaConf.create({"objective": ["final.val_top1"]})
    changed = r"^objective=\['final.val_top1'\]: study 's' .* \['best.val_top1'\]$"
    with pytest.raises(ConfigError, match=changed):
        open_study(make_plan(tmp_path, config), storage)
    open_study(make_plan(tmp_path), storage)
    resumed = storage.get_study_system_attrs(study_id)[SWEEP]
    assert resumed["objective"] == ["best.val_top1"] and "objectives" not in resumed


def test_pruner_none_switches_off_a_study_s_tuned_pruner(tmp_path):
    p = make_plan(tmp_path, pruner={**PRUNERS["none"], "n_startup_trials": 4})
    assert p.pruning_study is None
    assert type(p.pruner).__name__ == "NopPruner"


ADAPTIVE = {"_target_": "van_ablate.sweep.adaptive.AdaptiveSampler", "baseline": "baseline"}
ROWS_AND_SEEDS = ["+ablation=choice(baseline,k7,sigmoid)", "seed=range(0,10)"]


def adaptive_plan(tmp_path, arguments=ROWS_AND_SEEDS, n_trials=100, **sampler):
    return make_plan(
        tmp_path,
        sampler={**ADAPTIVE, **sampler},
        arguments=arguments,
        n_trials=n_trials,
        params=None,
    )


def test_an_adaptive_study_takes_its_rows_from_the_row_axis_and_caps_trials_at_max_seeds(
    tmp_path,
):
    p = adaptive_plan(tmp_path, min_seeds=3, max_seeds=6)
    assert p.sampler.rule.rows == ("baseline", "k7", "sigmoid")
    assert p.n_trials == 3 * 6


@pytest.mark.parametrize(
    "arguments, n_trials, sampler, key, message",
    [
        (ROWS_AND_SEEDS, 100, dict(min_seeds=5, max_seeds=3), "max_seeds", "an integer >= 5"),
        (ROWS_AND_SEEDS, 100, dict(target=0.0), "target", "must be a number > 0"),
        (ROWS_AND_SEEDS, 100, dict(target=-1.0), "target", "must be a number > 0"),
        (ROWS_AND_SEEDS, 8, dict(min_seeds=3), "n_trials", "min_seeds: 3 rows x 3 = 9"),
        (["+ablation=choice(baseline,k7)", "seed=0"], 100, {}, "params", "needs a seed axis"),
        (["seed=range(0,10)"], 100, {}, "params", "needs a +ablation axis"),
        (["+ablation=choice(baseline,k7)", "seed=range(0,4)"], 100, {}, "seed", "seeds 0 .. 9"),
        (["+ablation=choice(k7,sigmoid)", "seed=range(0,10)"], 100, {}, "baseline", "k7"),
    ],
)  # fmt: skip
def test_an_adaptive_study_is_refused_in_one_line(
    tmp_path, arguments, n_trials, sampler, key, message
):
    with pytest.raises(ConfigError) as err:
        adaptive_plan(tmp_path, arguments, n_trials, **sampler)
    text = str(err.value)
    assert key in text.split("=")[0] and message in text and "\n" not in text


def test_a_deletion_override_reaches_the_job_as_typed():
    # the official plugin passes `~key` on unchanged; `~key=null` would set it to null instead
    space = parse_space({}, ["~train.clip_grad", "seed=choice(0,1)"])
    overrides = job_overrides(optuna.trial.FixedTrial({"seed": 1}), space)
    assert overrides == ["seed=1", "~train.clip_grad"]
