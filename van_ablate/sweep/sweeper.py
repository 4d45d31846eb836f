"""Ask Optuna -> launch Hydra jobs with overrides -> jobs report per epoch -> tell Optuna.

Everything a user can get wrong is checked in :func:`plan` before any job starts (one line
naming the key, the value and what is allowed). The loop then claims trials under the storage
lock (:mod:`van_ablate.sweep.coordinator`), launches them with the configured launcher
(:mod:`van_ablate.sweep.launch`: one return per job, even for a job cancelled on SLURM), reads
each job's outcome (:mod:`van_ablate.sweep.outcome`) and tells the study; a job that ended
without a result fails its trial, which is retried once. Several processes may run the same
command on one storage; together they finish exactly ``n_trials``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from van_ablate.errors import ConfigError
from van_ablate.io import atomic_write_text
from van_ablate.sweep import coordinator as co
from van_ablate.sweep import summary as summ
from van_ablate.sweep.factories import (
    EXHAUSTIVE_SAMPLERS,
    make_pruner,
    make_sampler,
    sampler_name,
    worker_seed,
)
from van_ablate.sweep.launch import launch
from van_ablate.sweep.outcome import Constraint, constraint_values, one_line, read_outcome
from van_ablate.sweep.space import CustomSpace, SearchSpace, job_overrides, parse_space, quote
from van_ablate.sweep.storage import (
    JOURNAL_NAME,
    Heartbeat,
    Worker,
    has_trial_heartbeats,
    open_storage,
    quiet_study_creation,
    study_lock,
)

log = logging.getLogger(__name__)
DIRECTIONS = ("minimize", "maximize")
POLL_S = 2.0  # how often a process with nothing left to claim looks at its peers' trials


class SweepAborted(ConfigError):
    """More trials failed than ``hydra.sweeper.max_failure_rate`` allows."""


@dataclass
class Plan:
    """A validated sweep: what to search, how, and where the study lives."""

    study_name: str
    storage_url: str
    directions: list[str]
    objectives: list[str]
    space: SearchSpace
    custom: CustomSpace | None
    sampler: optuna.samplers.BaseSampler
    sampler_spec: dict[str, Any]
    pruner_spec: dict[str, Any]
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    constraints: list[Constraint] = field(default_factory=list)
    stale_after_s: float = 120.0

    @property
    def pruning_study(self) -> str | None:
        """Optuna prunes one objective only: several get a twin study on the first one."""
        pruning = self.pruner_spec.get("name", "none") != "none"
        return f"{self.study_name}.pruning" if pruning and len(self.directions) > 1 else None


class VanOptunaSweeperImpl(Sweeper):
    def __init__(self, **settings: Any) -> None:
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
        p = plan(self.settings, self.config, arguments, self.sweep_dir)
        self._preflight(p)
        # As Hydra's basic sweeper does: the sweep's config beside its trials (reports read the
        # sampler's startup count there); the same text from every worker, written atomically.
        atomic_write_text(self.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        storage = open_storage(p.storage_url, stale_after_s=p.stale_after_s)
        study, study_id = open_study(p, storage)
        worker = Worker()
        with study_lock(storage, p.study_name, worker, stale_after_s=p.stale_after_s):
            joined = co.join(storage, study_id)
        seed = worker_seed(p.sampler_spec.get("seed"), joined)
        if seed is not None:
            spec = {**p.sampler_spec, "seed": seed}
            study.sampler = make_sampler(spec, p.space, len(p.directions))
        log.info(
            f"Study {p.study_name} in {p.storage_url}: {p.n_trials} trials, "
            f"{type(study.sampler).__name__} (seed {seed}, process {joined} on this study), "
            f"pruner {p.pruner_spec.get('name')}, directions {p.directions} for {p.objectives}"
        )
        heartbeat = None
        if not has_trial_heartbeats(storage):
            heartbeat = Heartbeat.of_worker(storage, study_id, worker, p.stale_after_s / 4)
        try:
            self._loop(p, study, storage, study_id, worker)
        finally:
            if heartbeat is not None:
                heartbeat.close()
            result = summ.summarize(study, p.objectives, p.n_trials, p.storage_url)
            summ.write(result, self.sweep_dir)
            summ.report(result)
            self._log_wandb(result)
        return result

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self, p: Plan, study: optuna.Study, storage: Any, study_id: int, w: Worker) -> None:
        twin = _load_twin(p, storage)
        while True:
            batch: list[tuple[optuna.Trial, int, list[str]]] = []
            with study_lock(storage, p.study_name, w, stale_after_s=p.stale_after_s):
                for t in co.fail_stale(study, storage, study_id, p.stale_after_s):
                    log.warning(f"Trial {t.number} was left running by a stopped sweep: failed")
                    _tell_twin(twin, t.system_attrs.get(co.PRUNING_TRIAL), TrialState.FAIL)
                while len(batch) < p.n_jobs:
                    trial = co.take_trial(study, storage, p.n_trials, w)
                    if trial is None:
                        break
                    trial_id = storage.get_trial_id_from_study_id_trial_number(
                        study_id, trial.number
                    )
                    batch.append(
                        (trial, trial_id, self._configure(p, storage, trial_id, trial, twin))
                    )
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not batch:
                if not running:
                    return
                time.sleep(POLL_S)  # peers still run trials; one may die and need replacing
                continue
            beats = None
            if has_trial_heartbeats(storage):
                beats = Heartbeat.of_trials(storage, [trial_id for _, trial_id, _ in batch])
            try:
                returns = launch(self.launcher, [ov for _, _, ov in batch], self.job_idx)
            finally:
                if beats is not None:
                    beats.close()
            self.job_idx += len(returns)
            for (trial, trial_id, _), ret in zip(batch, returns, strict=True):
                self._tell(p, study, storage, twin, trial, storage.get_trial(trial_id), ret, w)
            _check_failures(p, [storage.get_trial(trial_id) for _, trial_id, _ in batch])

    def _configure(
        self,
        p: Plan,
        storage: Any,
        trial_id: int,
        trial: optuna.Trial,
        twin: optuna.Study | None,
    ) -> list[str]:
        """Suggest the trial's parameters and build its job's overrides."""
        try:
            overrides = job_overrides(trial, p.space, p.custom, self.config)
        except Exception as e:
            trial.set_user_attr(co.REASON, one_line(e))
            trial.study.tell(trial, state=TrialState.FAIL)
            raise
        if p.space.fixed:
            trial.set_user_attr("fixed", p.space.fixed)
        if twin is not None:
            twin_number = twin.ask().number
            storage.set_trial_system_attr(trial_id, co.PRUNING_TRIAL, twin_number)
        root = co.root_number(storage.get_trial(trial_id))
        return [
            *overrides,
            f"++trial.storage={quote(p.storage_url)}",
            f"++trial.study_name={quote(p.study_name)}",
            f"++trial.number={trial.number}",
            f"hydra.sweep.subdir=trial_{root}",
        ]

    def _tell(
        self,
        p: Plan,
        study: optuna.Study,
        storage: Any,
        twin: optuna.Study | None,
        trial: optuna.Trial,
        frozen: FrozenTrial,
        ret: JobReturn,
        w: Worker,
    ) -> None:
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
        if outcome.retry:  # under the lock: a peer must not count the trial before its retry
            study_id = storage.get_study_id_from_name(p.study_name)
            with study_lock(storage, p.study_name, w, stale_after_s=p.stale_after_s):
                if co.fail(study, storage, study_id, frozen, reason):
                    reason += "; retried"
        else:
            _tell(study, trial, values, state)
        first = [values[0]] if values else None
        _tell_twin(twin, frozen.system_attrs.get(co.PRUNING_TRIAL), state, first)
        epochs = attrs.get("epochs_done", len(frozen.intermediate_values))
        detail = values if values else (reason or f"after {epochs} epochs")
        log.info(f"Trial {trial.number} {state.name}: {detail}  params {trial.params}")

    # -- checks before any job --------------------------------------------------------------

    def _preflight(self, p: Plan) -> None:
        """Compose one job's config from a throwaway trial: bad keys fail before any job."""
        with quiet_study_creation():
            trial = optuna.create_study(directions=p.directions).ask()
        overrides = job_overrides(trial, p.space, p.custom, self.config)
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
    settings: dict[str, Any], config: DictConfig, arguments: Sequence[str], sweep_dir: Path
) -> Plan:
    """Validate the sweeper settings against the app's config; nothing is written yet."""
    s = {k: _plain(v) for k, v in settings.items()}
    if s.get("search_space"):
        allowed = "the pre-1.2 form of the official plugin; write the space as hydra.sweeper.params"
        raise ConfigError("hydra.sweeper.search_space", s["search_space"], allowed)
    direction = s.get("direction")
    if direction is None:
        direction = _default_direction(config)
    directions = direction if isinstance(direction, list) else [direction]
    for d in directions:
        if d not in DIRECTIONS:
            allowed = f"must be one of {', '.join(DIRECTIONS)}"
            raise ConfigError("hydra.sweeper.direction", d, allowed)
    objectives = _objectives(config, len(directions))
    if len(objectives) != len(directions):
        allowed = f"needs one direction per objective {objectives} ({len(objectives)})"
        raise ConfigError("hydra.sweeper.direction", directions, allowed)
    for key in ("n_trials", "n_jobs"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise ConfigError(f"hydra.sweeper.{key}", s[key], "must be an integer >= 1")
    rate = s["max_failure_rate"]
    if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ConfigError("hydra.sweeper.max_failure_rate", rate, "must be a number in [0, 1]")
    space = parse_space(s.get("params"), arguments)
    custom = None
    if s.get("custom_search_space"):
        try:
            custom = get_method(s["custom_search_space"])
        except Exception as e:
            allowed = "must name a function fn(cfg, trial)"
            name = s["custom_search_space"]
            raise ConfigError("hydra.sweeper.custom_search_space", name, allowed) from e
    sampler_spec = s.get("sampler") or {"name": "tpe"}
    sampler = make_sampler(sampler_spec, space, len(directions))
    n_trials = s["n_trials"]
    name = sampler_name(sampler_spec)
    if name in EXHAUSTIVE_SAMPLERS and space.distributions:
        size = math.prod(len(v) for v in space.grid().values()) if name == "grid" else None
        n_trials = min(n_trials, size or space.n_points())
    pruner_spec = s.get("pruner") or {"name": "none"}
    make_pruner(pruner_spec)  # validated here, rebuilt by every job from the study
    if not s.get("study_name"):
        raise ConfigError("hydra.sweeper.study_name", s.get("study_name"), "must be a name")
    storage_url = s.get("storage") or str(sweep_dir / JOURNAL_NAME)
    if "://" not in storage_url:
        storage_url = str(Path(storage_url).absolute())
    constraints = [Constraint.parse(c) for c in s.get("constraints") or []]
    _check_fields(config, [c.field for c in constraints], "hydra.sweeper.constraints")
    return Plan(
        study_name=str(s["study_name"]),
        storage_url=storage_url,
        directions=directions,
        objectives=objectives,
        space=space,
        custom=custom,
        sampler=sampler,
        sampler_spec=dict(sampler_spec),
        pruner_spec=pruner_spec,
        n_trials=n_trials,
        n_jobs=s["n_jobs"],
        max_failure_rate=float(rate),
        constraints=constraints,
        stale_after_s=float(s.get("stale_after_s", 120.0)),
    )


def open_study(p: Plan, storage: Any) -> tuple[optuna.Study, int]:
    """Create or resume the study; a resumed one must have the same space and objectives."""
    pruner = make_pruner(p.pruner_spec)
    if p.study_name in optuna.get_all_study_names(storage):  # resume without Optuna's log line
        study = optuna.load_study(
            study_name=p.study_name, storage=storage, sampler=p.sampler, pruner=pruner
        )
    else:
        study = optuna.create_study(
            storage=storage,
            study_name=p.study_name,
            directions=p.directions,
            sampler=p.sampler,
            pruner=pruner,
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
        "pruner": p.pruner_spec,
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
    return study, study_id


def _load_twin(p: Plan, storage: Any) -> optuna.Study | None:
    if p.pruning_study is None:
        return None
    return optuna.load_study(study_name=p.pruning_study, storage=storage)


def _tell(study: optuna.Study, trial: optuna.Trial | int, values: Any, state: TrialState) -> None:
    try:
        study.tell(trial, values, state=state, skip_if_finished=True)
    except RuntimeError as e:
        # Grid and brute-force samplers call study.stop() once exhausted, which Optuna only
        # allows inside optimize(); the trial is stored before that, and our count ends the loop.
        if "Study.stop" not in str(e):
            raise


def _tell_twin(
    twin: optuna.Study | None, number: int | None, state: TrialState, values: Any = None
) -> None:
    if twin is not None and number is not None:
        _tell(twin, int(number), values if state == TrialState.COMPLETE else None, state)


def _check_failures(p: Plan, batch: list[FrozenTrial]) -> None:
    """Stop when more than ``max_failure_rate`` of one batch failed (the official rule)."""
    failed = [t for t in batch if t.state == TrialState.FAIL]
    if len(failed) > p.max_failure_rate * len(batch):
        last = failed[-1]
        raise SweepAborted(
            "hydra.sweeper.max_failure_rate",
            p.max_failure_rate,
            f"{len(failed)} of the {len(batch)} trials of a batch failed (more than this "
            f"fraction of a batch of n_jobs); sweep stopped; last, #{last.number}: "
            f"{co.reason(last)}",
        )


def _default_direction(config: DictConfig) -> str | list[str]:
    """``minimize``, the official default, unless the app's objective is better higher."""
    names = OmegaConf.select(config, "objective")
    if names is None:
        return "minimize"
    from van_ablate.results import HIGHER_IS_BETTER

    names = [str(n) for n in (names if not isinstance(names, str) else [names])]
    higher = [n for n in names if n in HIGHER_IS_BETTER]
    if higher:
        allowed = (
            f"must be set: the objective {higher[0]} is better higher and the official default, "
            f"minimize, would minimise it; give one of minimize, maximize per objective {names}"
        )
        raise ConfigError("hydra.sweeper.direction", None, allowed)
    return "minimize" if len(names) == 1 else ["minimize"] * len(names)


def _objectives(config: DictConfig, n_directions: int) -> list[str]:
    """The app's ``objective`` list (checked against results.json), or anonymous values."""
    names = OmegaConf.select(config, "objective")
    if names is None:
        return [f"value_{i}" for i in range(n_directions)] if n_directions > 1 else ["value"]
    names = [str(n) for n in (names if not isinstance(names, str) else [names])]
    _check_fields(config, names, "objective")
    return names


def _check_fields(config: DictConfig, names: list[str], key: str) -> None:
    if OmegaConf.select(config, "objective") is None:
        return  # not our training app: its results have no known schema
    from van_ablate.results import OBJECTIVE_FIELDS

    for name in names:
        if name not in OBJECTIVE_FIELDS:
            raise ConfigError(key, name, f"must be one of {', '.join(OBJECTIVE_FIELDS)}")


def _changed(old_json: str, new_json: str) -> str:
    import json

    old, new = json.loads(old_json), json.loads(new_json)
    keys = set()
    for part in ("distributions", "fixed"):
        a, b = old.get(part, {}), new.get(part, {})
        keys |= {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    return ", ".join(sorted(keys)) or "?"


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig,)) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
