"""Ask Optuna -> launch Hydra jobs with overrides -> jobs report per epoch -> tell Optuna.

The settings arrive as :class:`~hydra_plugins.van_ablate_sweeper.config.VanOptunaSweeperConf`;
everything a user can get wrong is checked in :func:`plan` before any job starts (one line
naming the key, the value and what is allowed). The loop then takes trials under the study lock
(:mod:`van_ablate.sweep.coordinator`), launches them with the configured launcher
(:mod:`van_ablate.sweep.launch`: one return per job, even for a job cancelled on SLURM), reads
each job's outcome (:mod:`van_ablate.sweep.outcome`) and tells the study; a job that ended
without a result fails its trial, which is retried once. Several processes may run the same
command on one storage; together they finish exactly ``n_trials``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.pruners import BasePruner, NopPruner
from optuna.samplers import BaseSampler, GridSampler
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.van_ablate_sweeper.config import VanOptunaSweeperConf
from van_ablate import checks
from van_ablate.config import validate
from van_ablate.errors import ConfigError, Preempted
from van_ablate.io import atomic_write_text
from van_ablate.results import HIGHER_IS_BETTER, OBJECTIVE_FIELDS
from van_ablate.runs import ablations_from_overrides
from van_ablate.sweep import coordinator as co
from van_ablate.sweep import forecast
from van_ablate.sweep import summary as summ
from van_ablate.sweep.adaptive import AdaptiveSampler
from van_ablate.sweep.factories import (
    EXHAUSTIVE,
    ONE_OBJECTIVE,
    make_pruner,
    make_sampler,
    sampler_class,
    worker_seed,
)
from van_ablate.sweep.launch import launch
from van_ablate.sweep.outcome import Constraint, constraint_values, one_line, read_outcome
from van_ablate.sweep.space import (
    CustomSpace,
    SearchSpace,
    format_value,
    job_overrides,
    parse_space,
    quote,
    suggest,
)
from van_ablate.sweep.storage import JOURNAL_NAME, heartbeat, open_storage, quiet_optuna, study_lock

log = logging.getLogger(__name__)
DIRECTIONS = ("minimize", "maximize")
POLL_S = 2.0  # how often a process with nothing left to take looks at its peers' trials


class SweepAborted(ConfigError):
    """More trials failed than ``hydra.sweeper.max_failure_rate`` allows."""


@dataclass
class Plan:
    """A checked sweep: the settings, and what follows from them and the app's config."""

    settings: VanOptunaSweeperConf
    study_name: str
    storage_url: str
    directions: list[str]
    objectives: list[str]
    space: SearchSpace
    custom: CustomSpace | None
    sampler: BaseSampler
    pruner: BasePruner
    n_trials: int  # at most the points of an exhaustive sampler's space
    constraints: list[Constraint] = field(default_factory=list)
    sampler_args: dict[str, Any] = field(default_factory=dict)  # a grid's search_space

    @property
    def pruning_study(self) -> str | None:
        """Optuna prunes one objective only: several get a twin study on the first one."""
        pruning = not isinstance(self.pruner, NopPruner) and len(self.directions) > 1
        return f"{self.study_name}.pruning" if pruning else None


class VanOptunaSweeperImpl(Sweeper):
    def __init__(self, settings: VanOptunaSweeperConf) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()

    def sweep(self, arguments: list[str]) -> dict[str, Any]:
        assert self.config is not None
        self.p = p = plan(self.settings, self.config, arguments, self.sweep_dir)
        self._preflight()
        ours = OmegaConf.select(self.config, "objective") is not None  # a van_ablate job config
        if p.settings.dry_run:
            for line in self._forecast().lines() if ours else ["no forecast for this app"]:
                log.info(line)
            return None
        # As Hydra's basic sweeper does: the sweep's config beside its trials (reports read the
        # sampler's startup count there); the same text from every worker, written atomically.
        atomic_write_text(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        if ours and p.settings.forecast:  # before anything is written
            self._check_budget(self._forecast())
        self.storage = storage = open_storage(p.storage_url, stale_after_s=p.settings.stale_after_s)
        self.study = study = open_study(p, storage)
        self.twin = p.pruning_study and optuna.load_study(
            study_name=p.pruning_study, storage=storage
        )
        with study_lock(storage, p.study_name, p.settings.stale_after_s):
            joined = co.join(storage, storage.get_study_id_from_name(p.study_name))
        seed = worker_seed(p.settings.sampler.get("seed"), joined)
        if seed != p.settings.sampler.get("seed"):
            study.sampler = make_sampler(p.settings.sampler, **p.sampler_args, seed=seed)
        log.info(
            f"Study {p.study_name} in {p.storage_url}: {p.n_trials} trials, "
            f"{type(study.sampler).__name__} (seed {seed}, process {joined} on this study), "
            f"pruner {type(p.pruner).__name__}, directions {p.directions} for {p.objectives}"
        )
        try:
            self._loop()
        finally:
            result = summ.summarize(study, p.objectives, p.n_trials, p.storage_url)
            summ.write(result, self.sweep_dir)
            summ.report(result)
            self._log_wandb(result)
        return result

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        p, study, storage = self.p, self.study, self.storage
        while True:
            batch: dict[int, tuple[optuna.Trial, list[str]]] = {}  # trial id -> trial, overrides
            with study_lock(storage, p.study_name, p.settings.stale_after_s):
                for t in co.fail_stale(study, storage, p.settings.stale_after_s):
                    log.warning(f"Trial {t.number} was left running by a stopped sweep: failed")
                    self._tell_twin(t, TrialState.FAIL)
                while len(batch) < p.settings.n_jobs and not self._spent(study):
                    trial = co.take_trial(study, storage, p.n_trials)
                    if trial is None:
                        break
                    trial_id = co.trial_id_of(storage, study, trial.number)
                    batch[trial_id] = (trial, self._configure(trial, trial_id))
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not batch:
                if not running:
                    return
                time.sleep(POLL_S)  # peers still run trials; one may die and need replacing
                continue
            overrides = [o for _, o in batch.values()]
            with heartbeat(storage, list(batch), p.settings.stale_after_s / 4):
                returns = launch(self.launcher, self.config, overrides, self.job_idx)
            self.job_idx += len(returns)
            for (trial_id, (trial, _)), ret in zip(batch.items(), returns, strict=True):
                self._tell(trial, storage.get_trial(trial_id), ret)
            for ret in returns:  # a stop signal reached this process (a job ran in it): stop
                if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Preempted):
                    raise ret._return_value  # its trial is retried (resumed) by the next run
            _check_failures(
                p, [storage.get_trial(trial_id) for trial_id in batch], study.get_trials()
            )

    def _configure(self, trial: optuna.Trial, trial_id: int) -> list[str]:
        """Suggest the trial's parameters and build its job's overrides."""
        p = self.p
        try:
            overrides = job_overrides(trial, p.space, p.custom, self.config)
        except Exception as e:
            trial.set_user_attr(co.REASON, one_line(e))
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        if p.space.fixed:
            trial.set_user_attr("fixed", p.space.fixed)
        if self.twin:
            self.storage.set_trial_system_attr(trial_id, co.PRUNING_TRIAL, self.twin.ask().number)
        return [
            *overrides,
            f"++trial.storage={quote(p.storage_url)}",
            f"++trial.study_name={quote(p.study_name)}",
            f"++trial.number={trial.number}",
            f"hydra.sweep.subdir=trial_{co.root_number(self.storage.get_trial(trial_id))}",
        ]

    def _tell(self, trial: optuna.Trial, frozen: FrozenTrial, ret: JobReturn) -> None:
        p = self.p
        run_dir = self.sweep_dir / f"trial_{co.root_number(frozen)}"
        if ret.hydra_cfg is not None:
            run_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
        pruned_at = frozen.system_attrs.get(co.PRUNED_AT)
        outcome = read_outcome(ret, run_dir, len(p.directions), pruned_at)
        state, reason = outcome.state, outcome.reason
        attrs: dict[str, Any] = {"run_dir": str(run_dir), **outcome.attrs}
        if outcome.results is not None:
            attrs["epochs_done"] = len(outcome.results.get("epochs") or [])
        if p.constraints and state in (TrialState.COMPLETE, TrialState.PRUNED):
            values = outcome.values or outcome.attrs.get("objective_values")
            try:
                for key, value in constraint_values(
                    p.constraints, outcome.results, p.objectives, values
                ).items():
                    trial.set_constraint(key, value)
            except KeyError as e:
                state, reason = TrialState.FAIL, str(e.args[0])
        if reason is not None and not outcome.retry:
            attrs[co.REASON] = reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        values = outcome.values if state == TrialState.COMPLETE else None
        if not outcome.retry:
            _tell(self.study, trial, values, state)
        elif co.fail(self.study, self.storage, frozen, reason):
            reason += "; retried"
        self._tell_twin(frozen, state, [values[0]] if values else None)
        epochs = attrs.get("epochs_done", len(frozen.intermediate_values))
        detail = values if values else (reason or f"after {epochs} epochs")
        log.info(f"Trial {trial.number} {state.name}: {detail}  params {trial.params}")

    def _tell_twin(self, trial: FrozenTrial, state: TrialState, values: Any = None) -> None:
        number = trial.system_attrs.get(co.PRUNING_TRIAL)
        if self.twin and number is not None:
            _tell(self.twin, int(number), values if state == TrialState.COMPLETE else None, state)

    def _spent(self, study: optuna.Study) -> bool:
        """Nothing more to take: an adaptive sampler has no point left now, or the study's
        device hours (its finished trials' durations) reached ``budget_h``."""
        if isinstance(study.sampler, AdaptiveSampler) and study.sampler.is_exhausted(study):
            return True
        budget = self.p.settings.budget_h
        if budget is None:
            return False
        spent = sum(
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.get_trials(deepcopy=False)
            if t.datetime_complete is not None and t.datetime_start is not None
        )
        if spent >= budget * 3600:
            log.info(f"Budget spent: {spent / 3600:.2f} of hydra.sweeper.budget_h={budget} h")
            return True
        return False

    # -- checks before any job --------------------------------------------------------------

    def _forecast(self) -> forecast.Forecast:
        """Time every row of the study on this device (our app only: it reads the job config)."""
        p = self.p
        grid = None
        with contextlib.suppress(ConfigError):
            grid = p.space.grid()
        sample = None
        if grid is None:  # a continuous space: a few points drawn from it stand for it
            with quiet_optuna():
                study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            sample = [dict(_params(study.ask(), p)) for _ in range(forecast.MAX_ROWS // 3)]
        rule = getattr(p.sampler, "rule", None)
        seeds = (rule.min_seeds, rule.max_seeds) if rule else None
        rows, expected, worst = forecast.study_rows(grid, p.n_trials, seeds, sample)
        configs = {}
        for name, params in rows.items():
            overrides = [f"{k}={format_value(v)}" for k, v in params.items()]
            overrides += [k if v is None else f"{k}={v}" for k, v in p.space.fixed.items()]
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg):
                del cfg["hydra"]
            configs[name] = validate(cfg, ablations_from_overrides(overrides))
        return forecast.forecast(configs, expected, worst)

    def _check_budget(self, cost: forecast.Forecast) -> None:
        for line in cost.lines():
            log.info(line)
        budget = self.p.settings.budget_h
        adaptive = isinstance(self.p.sampler, AdaptiveSampler)
        if budget is not None and cost.expected_h > budget:
            what = "one round of min_seeds" if adaptive else "the study"
            allowed = (
                f"the forecast for {what} is {cost.expected_h:.2f} device hours on this device; "
                "raise the budget, or shrink the study"
            )
            raise ConfigError("hydra.sweeper.budget_h", budget, allowed)

    def _preflight(self) -> None:
        """Compose one job's config from a throwaway trial: bad keys fail before any job."""
        with quiet_optuna():
            trial = optuna.create_study(directions=self.p.directions).ask()
        overrides = job_overrides(trial, self.p.space, self.p.custom, self.config)
        overrides += ["++trial.storage=null", "++trial.study_name=null", "++trial.number=0"]
        try:
            self.validate_batch_is_legal([overrides])
        except Exception as e:
            raise ConfigError("hydra.sweeper.params", " ".join(overrides), one_line(e)) from e

    def _log_wandb(self, result: dict[str, Any]) -> None:
        logger = OmegaConf.select(self.config, "logger")
        if logger is None or OmegaConf.select(logger, "name") != "wandb":
            return
        try:
            summ.log_to_wandb(result, logger, self.sweep_dir)
        except Exception as e:  # the study and the YAML summary are the record; W&B is a view
            log.warning(f"W&B summary not logged: {one_line(e)}")


def plan(
    s: VanOptunaSweeperConf, config: DictConfig, arguments: Sequence[str], sweep_dir: Path
) -> Plan:
    """Check the sweeper settings against the app's config; nothing is written yet."""
    if s.search_space:
        allowed = "the pre-1.2 form of the official plugin; write the space as hydra.sweeper.params"
        raise ConfigError("hydra.sweeper.search_space", s.search_space, allowed)
    directions, objectives = _objectives(config, s.direction)
    checks.at_least("hydra.sweeper.n_trials", s.n_trials, 1)
    checks.at_least("hydra.sweeper.n_jobs", s.n_jobs, 1)
    checks.in_range("hydra.sweeper.max_failure_rate", s.max_failure_rate, 0, 1)
    if not s.study_name:
        raise ConfigError("hydra.sweeper.study_name", s.study_name, "must be a name")
    space = parse_space(s.params, arguments)
    try:
        custom = get_method(s.custom_search_space) if s.custom_search_space else None
    except Exception as e:
        key, allowed = "hydra.sweeper.custom_search_space", "must name a function fn(cfg, trial)"
        raise ConfigError(key, s.custom_search_space, allowed) from e
    cls = sampler_class(s.sampler)
    if len(directions) > 1 and issubclass(cls, ONE_OBJECTIVE):
        allowed = "handles one objective; for several use nsgaii, tpe, gp or random"
        raise ConfigError("hydra.sweeper.sampler._target_", s.sampler["_target_"], allowed)
    sampler_args = {"search_space": space.grid()} if issubclass(cls, GridSampler) else {}
    n_trials = s.n_trials
    if issubclass(cls, EXHAUSTIVE) and space.distributions:
        points = space.grid(stop_included=not issubclass(cls, GridSampler))
        n_trials = min(n_trials, math.prod(map(len, points.values())))
    if issubclass(cls, AdaptiveSampler):
        sampler_args, n_trials = _adaptive(s, space)
    if s.budget_h is not None:
        checks.above("hydra.sweeper.budget_h", s.budget_h, 0.0)
    storage_url = s.storage or str(sweep_dir / JOURNAL_NAME)
    if "://" not in storage_url:
        storage_url = str(Path(storage_url).absolute())
    constraints = [Constraint.parse(c) for c in s.constraints or []]
    if OmegaConf.select(config, "objective") is not None:  # our app: results.json's fields
        for c in constraints:
            checks.one_of("hydra.sweeper.constraints", c.field, OBJECTIVE_FIELDS)
    return Plan(
        settings=s,
        study_name=str(s.study_name),
        storage_url=storage_url,
        directions=directions,
        objectives=objectives,
        space=space,
        custom=custom,
        sampler=make_sampler(s.sampler, **sampler_args),
        pruner=make_pruner(s.pruner),  # checked here, rebuilt by every job from the study
        n_trials=n_trials,
        constraints=constraints,
        sampler_args=sampler_args,
    )


def _adaptive(s: VanOptunaSweeperConf, space: SearchSpace) -> tuple[dict[str, Any], int]:
    """An adaptive study's rows (its row axis' choices) and its trial budget, checked: a row
    axis and a seed axis 0 .. max_seeds - 1 and nothing else to choose, and at least one round
    of ``min_seeds`` for every row."""
    key = "hydra.sweeper.params"
    grid = space.grid()
    rule = make_sampler(s.sampler, rows=["?"], baseline="?").rule  # the settings' seeds
    row_param = s.sampler.get("row_param", "+ablation")
    seed_param = s.sampler.get("seed_param", "seed")
    for axis, what in ((row_param, "choice(<rows>)"), (seed_param, "range(0, <max_seeds>)")):
        if axis not in grid:
            allowed = f"an adaptive study needs a {axis} axis: {axis}: {what}"
            raise ConfigError(key, sorted(grid), allowed)
    if others := sorted(set(grid) - {row_param, seed_param}):
        allowed = f"an adaptive study chooses only {row_param} and {seed_param}; fix the others"
        raise ConfigError(key, others, allowed)
    if sorted(grid[seed_param])[: rule.max_seeds] != list(range(rule.max_seeds)):
        allowed = f"must hold the seeds 0 .. {rule.max_seeds - 1} (max_seeds={rule.max_seeds})"
        raise ConfigError(f"{key}.{seed_param}", grid[seed_param], allowed)
    rows = list(grid[row_param])
    first_round = len(rows) * rule.min_seeds
    if s.n_trials < first_round:
        allowed = f"must be at least one round of min_seeds: {len(rows)} rows x {rule.min_seeds}"
        raise ConfigError("hydra.sweeper.n_trials", s.n_trials, f"{allowed} = {first_round}")
    return {"rows": rows}, min(s.n_trials, len(rows) * rule.max_seeds)


def open_study(p: Plan, storage: Any) -> optuna.Study:
    """Create or resume the study; a resumed one must have the same space and objectives."""
    if p.study_name in optuna.get_all_study_names(storage):  # resume without Optuna's log line
        study = optuna.load_study(
            study_name=p.study_name, storage=storage, sampler=p.sampler, pruner=p.pruner
        )
    else:
        study = optuna.create_study(
            storage=storage,
            study_name=p.study_name,
            directions=p.directions,
            sampler=p.sampler,
            pruner=p.pruner,
            load_if_exists=True,
        )
    study_id = storage.get_study_id_from_name(p.study_name)
    created = [d.name.lower() for d in study.directions]
    where = f"study {p.study_name!r} in {p.storage_url} was created with"
    if created != p.directions:
        allowed = f"{where} {created}; use those or a new study_name"
        raise ConfigError("hydra.sweeper.direction", p.directions, allowed)
    sweep = {
        "search_space": p.space.to_json(),
        "custom_search_space": getattr(p.custom, "__qualname__", None),
        "objective": p.objectives,
        "pruner": dict(p.settings.pruner or {}),
        "pruning_study": p.pruning_study,
    }
    old = storage.get_study_system_attrs(study_id).get(co.SWEEP)
    if old is not None:
        if co.sweep_objective(old) != p.objectives:
            raise ConfigError("objective", p.objectives, f"{where} {co.sweep_objective(old)}")
        for key in ("search_space", "custom_search_space"):
            if old[key] != sweep[key]:
                changed = _changed(old[key], sweep[key]) if key == "search_space" else old[key]
                allowed = f"{where} another search space ({changed}); use it or a new study_name"
                raise ConfigError("hydra.sweeper.params", changed, allowed)
    storage.set_study_system_attr(study_id, co.SWEEP, sweep)
    if p.pruning_study:
        optuna.create_study(
            storage=storage,
            study_name=p.pruning_study,
            direction=p.directions[0],
            load_if_exists=True,
        )
    return study


def _params(trial: optuna.Trial, p: Plan) -> dict[str, Any]:
    return {name: suggest(trial, name, dist) for name, dist in p.space.distributions.items()}


def _tell(study: optuna.Study, trial: optuna.Trial | int, values: Any, state: TrialState) -> None:
    try:
        study.tell(trial, values, state=state, skip_if_finished=True)
    except RuntimeError as e:
        # Grid and brute-force samplers call study.stop() once exhausted, which Optuna only
        # allows inside optimize(); the trial is stored before that, and our count ends the loop.
        if "Study.stop" not in str(e):
            raise


def _check_failures(p: Plan, batch: list[FrozenTrial], trials: list[FrozenTrial]) -> None:
    """Stop when more than ``max_failure_rate`` of one batch failed (the official rule). A
    failed trial that a retry replaces (among the study's ``trials``) counts only if its retry
    fails too, in the retry's own batch."""
    counted = {t.number for t in co.counted(trials)}
    failed = [t for t in batch if t.state == TrialState.FAIL and t.number in counted]
    rate = p.settings.max_failure_rate
    if len(failed) > rate * len(batch):
        raise SweepAborted(
            "hydra.sweeper.max_failure_rate",
            rate,
            f"{len(failed)} of the {len(batch)} trials of a batch failed (more than this "
            f"fraction of a batch of n_jobs); sweep stopped; last, #{failed[-1].number}: "
            f"{co.reason(failed[-1])}",
        )


def _objectives(config: DictConfig, direction: Any) -> tuple[list[str], list[str]]:
    """The directions, and the objectives they go with: the app's ``objective`` list (fields of
    results.json), or anonymous values. Unset, the direction is ``minimize`` (the official
    default), except for an objective that is better higher."""
    names = OmegaConf.select(config, "objective")
    names = (
        None if names is None else [str(n) for n in ([names] if isinstance(names, str) else names)]
    )
    for name in names or []:
        checks.one_of("objective", name, OBJECTIVE_FIELDS)
    higher = [n for n in names or [] if n in HIGHER_IS_BETTER]
    if direction is None and higher:
        allowed = (
            f"must be set: the objective {higher[0]} is better higher and the official default, "
            f"minimize, would minimise it; give one of minimize, maximize per objective {names}"
        )
        raise ConfigError("hydra.sweeper.direction", None, allowed)
    direction = ["minimize"] * len(names or [0]) if direction is None else direction
    directions = list(direction) if isinstance(direction, (list, tuple)) else [direction]
    for d in directions:
        checks.one_of("hydra.sweeper.direction", d, DIRECTIONS)
    if names is None:
        names = [f"value_{i}" for i in range(len(directions))] if len(directions) > 1 else ["value"]
    if len(names) != len(directions):
        allowed = f"needs one direction per objective {names} ({len(names)})"
        raise ConfigError("hydra.sweeper.direction", directions, allowed)
    return directions, names


def _changed(old_json: str, new_json: str) -> str:
    old, new = json.loads(old_json), json.loads(new_json)
    keys = set()
    for part in ("distributions", "fixed"):
        a, b = old.get(part, {}), new.get(part, {})
        keys |= {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    return ", ".join(sorted(keys)) or "?"
