"""``hydra/sweeper=van_optuna``: the sweeper's settings, registered in Hydra's ConfigStore.

Keys and search-space syntax follow the official ``hydra-optuna-sweeper`` (``params``,
``direction``, ``n_trials``, ``n_jobs``, ``study_name``, ``storage``, ``sampler``,
``max_failure_rate``, ``custom_search_space``) with its defaults and meaning, so its configs
carry over; ``pruner``, ``constraints`` and ``stale_after_s`` are ours. Samplers and pruners are
config groups (``hydra/sweeper/sampler=nsgaii``, ``hydra/sweeper/pruner=median``) whose keys are
the Optuna constructor arguments; ``hydra.sweeper.sampler.<arg>=...`` sets any of them.
"""

# OmegaConf reads these annotations: typing forms, no unions.
# ruff: noqa: UP006, UP035, UP045
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# Group options: `name` selects the Optuna class, the other keys are its arguments.
SAMPLERS: Dict[str, Dict[str, Any]] = {
    "tpe": dict(n_startup_trials=10, multivariate=False, group=False, constant_liar=True),
    "random": {},
    "grid": {},
    "brute_force": dict(avoid_premature_stop=False),
    "nsgaii": dict(population_size=50, mutation_prob=None, crossover_prob=0.9, swapping_prob=0.5),
    "nsgaiii": dict(population_size=50, mutation_prob=None, crossover_prob=0.9),
    "gp": dict(n_startup_trials=10, deterministic_objective=False),
    "qmc": dict(qmc_type="sobol", scramble=False),
    "cmaes": dict(n_startup_trials=1, use_separable_cma=False, consider_pruned_trials=False),
}
# Jobs report their per-epoch metric with step = epochs done (1-based).
PRUNERS: Dict[str, Dict[str, Any]] = {
    "none": {},
    "median": dict(n_startup_trials=5, n_warmup_steps=0, interval_steps=1, n_min_trials=1),
    "percentile": dict(percentile=25.0, n_startup_trials=5, n_warmup_steps=0, interval_steps=1),
    "hyperband": dict(min_resource=1, max_resource="auto", reduction_factor=3),
    "successive_halving": dict(min_resource="auto", reduction_factor=4, min_early_stopping_rate=0),
    "threshold": dict(lower=None, upper=None, n_warmup_steps=0, interval_steps=1),
}


@dataclass
class VanOptunaSweeperConf:
    _target_: str = "hydra_plugins.van_ablate_sweeper.sweeper.VanOptunaSweeper"
    # The sampler and pruner nodes are built by the sweeper, not by Hydra's instantiate.
    _recursive_: bool = False
    defaults: List[Any] = field(
        default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}, "_self_"]
    )

    # hydra/sweeper/sampler: tpe | random | grid | brute_force | nsgaii | nsgaiii | gp | qmc | cmaes
    sampler: Dict[str, Any] = MISSING
    # hydra/sweeper/pruner: none | median | percentile | hyperband | successive_halving | threshold
    pruner: Dict[str, Any] = MISSING
    # minimize | maximize, or one per objective (the app's `objective` list). Unset: minimize,
    # as the official plugin, but refused when an objective is better higher (accuracy).
    direction: Any = None
    # Study name; the same name on the same storage resumes the study.
    study_name: str = "${hydra.job.name}"
    # Journal file path or SQLAlchemy URL; null: <hydra.sweep.dir>/optuna_journal.log
    storage: Optional[str] = None
    # Trials that count: COMPLETE + PRUNED + FAIL (a trial that was retried does not: a stale
    # one, or one whose job ended without a result; its retry counts).
    n_trials: int = 20
    # Trials launched together in one batch (the launcher decides how many run at once).
    n_jobs: int = 1
    # Abort once more than this fraction of one batch (n_jobs trials) has failed, as official.
    max_failure_rate: float = 0.0
    # Search space in override syntax: choice(...), range(...), interval(...), tag(log, ...)
    params: Optional[Dict[str, Any]] = None
    # "module.function"; function(cfg, trial) suggests more parameters (conditional spaces) and
    # may return a dict of overrides built from them.
    custom_search_space: Optional[str] = None
    # The official plugin's pre-1.2 form; rejected with a pointer to `params`.
    search_space: Optional[Dict[str, Any]] = None
    # e.g. ["complexity.macs <= 1.0e9"]: recorded with Optuna's constraint API
    constraints: List[str] = field(default_factory=list)
    # A trial is stale when its sweep process is gone: same host at once (pid), other hosts
    # after this long without a heartbeat.
    stale_after_s: float = 120.0


store = ConfigStore.instance()
store.store(
    group="hydra/sweeper", name="van_optuna", node=VanOptunaSweeperConf, provider="van_ablate"
)
# Open nodes (struct off): any argument of the Optuna class is set as the official plugin's
# `hydra.sweeper.sampler.n_ei_candidates=30`, without `+`; unknown ones are refused when built.
for _name, _args in SAMPLERS.items():
    _node = OmegaConf.create({"name": _name, "seed": None, **_args}, flags={"struct": False})
    store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="van_ablate")
for _name, _args in PRUNERS.items():
    _node = OmegaConf.create({"name": _name, **_args}, flags={"struct": False})
    store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="van_ablate")
