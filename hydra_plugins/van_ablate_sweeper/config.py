"""``hydra/sweeper=van_optuna``: the sweeper's settings, registered in Hydra's ConfigStore.

Keys and search-space syntax follow the official ``hydra-optuna-sweeper`` (``params``,
``direction``, ``n_trials``, ``n_jobs``, ``study_name``, ``storage``, ``sampler``,
``max_failure_rate``, ``custom_search_space``) with its defaults and meaning, so its configs
carry over; ``pruner``, ``constraints`` and ``stale_after_s`` are ours. Samplers and pruners are
config groups (``hydra/sweeper/sampler=nsgaii``, ``hydra/sweeper/pruner=median``) of ``_target_``
nodes that ``hydra.utils.instantiate`` builds: ``hydra.sweeper.sampler.<arg>=...`` sets any
constructor argument, the others keep Optuna's defaults.
"""

# OmegaConf reads these annotations: typing forms, no unions.
# ruff: noqa: UP006, UP035, UP045
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# The group options: each names an Optuna class, with the arguments we set otherwise than Optuna.
SAMPLERS: Dict[str, Dict[str, Any]] = {
    # constant_liar: parallel workers do not all ask the same point; independent TPE, as before
    # Optuna 5 made the multivariate one the default
    "tpe": dict(_target_="optuna.samplers.TPESampler", constant_liar=True, multivariate=False),
    "random": dict(_target_="optuna.samplers.RandomSampler"),
    "grid": dict(_target_="optuna.samplers.GridSampler"),  # its search_space is params'
    "brute_force": dict(_target_="optuna.samplers.BruteForceSampler"),
    "nsgaii": dict(_target_="optuna.samplers.NSGAIISampler"),
    "nsgaiii": dict(_target_="optuna.samplers.NSGAIIISampler"),
    "gp": dict(_target_="optuna.samplers.GPSampler"),
    "qmc": dict(_target_="optuna.samplers.QMCSampler"),
    "cmaes": dict(_target_="optuna.samplers.CmaEsSampler"),
    # seeds where the answer is still open (van_ablate.sweep.adaptive); its rows are the
    # choices of row_param in params, as a grid's points are; the seeds, target and early stop
    # are the ready studies' (docs/sweeps.md, Studies that decide)
    "adaptive": dict(
        _target_="van_ablate.sweep.adaptive.AdaptiveSampler",
        row_param="+ablation",
        baseline="baseline",
        min_seeds=3,
        max_seeds=6,
        target=2.0,
        early_stop=True,
    ),
}
# Options of the official plugin that Optuna has since removed: chosen, each is refused in one line
# that says what to use instead (rather than Hydra's "Could not find").
REMOVED: Dict[str, str] = {
    "motpe": "MOTPESampler was removed in Optuna 4; tpe handles several objectives (sampler=tpe)",
}
# Jobs report their per-epoch metric with step = epochs done (1-based).
PRUNERS: Dict[str, Dict[str, Any]] = {
    "none": dict(_target_="optuna.pruners.NopPruner"),
    "median": dict(_target_="optuna.pruners.MedianPruner"),
    "percentile": dict(_target_="optuna.pruners.PercentilePruner", percentile=25.0),  # required
    "hyperband": dict(_target_="optuna.pruners.HyperbandPruner"),
    "successive_halving": dict(_target_="optuna.pruners.SuccessiveHalvingPruner"),
    "threshold": dict(_target_="optuna.pruners.ThresholdPruner"),  # set lower or upper
}


@dataclass
class VanOptunaSweeperConf:
    _target_: str = "hydra_plugins.van_ablate_sweeper.sweeper.VanOptunaSweeper"
    # The sampler and pruner are built by the sweeper (a grid needs the space), as plain dicts.
    _recursive_: bool = False
    _convert_: str = "all"
    defaults: List[Any] = field(
        default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}, "_self_"]
    )

    # hydra/sweeper/sampler: tpe | random | grid | brute_force | nsgaii | nsgaiii | gp | qmc | cmaes
    # | adaptive
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
    # Before the first trial, time every row on this device and print the study's expected
    # cost (van_ablate.sweep.forecast); dry_run: print only that, and launch nothing.
    forecast: bool = True
    dry_run: bool = False
    # Device hours the study may spend (its finished trials' durations added up, so a rerun
    # continues the count); a new study whose forecast exceeds it is refused. null: no limit.
    budget_h: Optional[float] = None


store = ConfigStore.instance()
store.store(
    group="hydra/sweeper", name="van_optuna", node=VanOptunaSweeperConf, provider="van_ablate"
)
# Open nodes (struct off): any argument of the Optuna class is set as the official plugin's
# `hydra.sweeper.sampler.n_ei_candidates=30`, without `+`; unknown ones are refused when built.
for _name in REMOVED:
    _node = OmegaConf.create({"_target_": None, "removed": _name}, flags={"struct": False})
    store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="van_ablate")
for _group, _table, _extra in (("sampler", SAMPLERS, {"seed": None}), ("pruner", PRUNERS, {})):
    for _name, _node in _table.items():
        _open = OmegaConf.create({**_node, **_extra}, flags={"struct": False})
        store.store(group=f"hydra/sweeper/{_group}", name=_name, node=_open, provider="van_ablate")
