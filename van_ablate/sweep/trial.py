"""The job side of an Optuna sweep: report each epoch to this job's trial, stop when pruned.

The sweeper (``hydra/sweeper=van_optuna``) gives every job ``trial.storage``,
``trial.study_name`` and ``trial.number``; the training loop calls::

    report_epoch(cfg.trial, epoch, val_top1)   # raises optuna.TrialPruned when told to stop

The pruner is the one the sweep was started with (kept in the study), so the decision is the
same whichever process or machine runs the job. Optuna prunes single-objective studies only; in
a multi-objective study (top-1 vs MACs) the epoch is also reported to the trial's twin in
``<study>.pruning``, a single-objective study on the first objective, and that twin's pruner
decides.
"""

from __future__ import annotations

import functools
from typing import Any

import optuna
from optuna.samplers import RandomSampler
from optuna.trial import TrialState

from van_ablate.errors import ConfigError
from van_ablate.sweep.coordinator import PRUNED_AT, PRUNING_TRIAL, SWEEP
from van_ablate.sweep.factories import make_pruner
from van_ablate.sweep.storage import open_storage


def report_epoch(trial_cfg: Any, epoch: int, value: float) -> None:
    """Report ``value`` at ``epoch`` (1-based: epochs done) and raise if the trial must stop.

    ``trial_cfg`` has ``storage``, ``study_name`` and ``number`` (a dataclass, dict or
    DictConfig); with ``storage`` None this does nothing. Raises ``optuna.TrialPruned`` when the
    study's pruner stops the trial, or when the trial is no longer running in the study.
    """
    storage = _get(trial_cfg, "storage")
    if storage is None:
        return
    study_name, number = _get(trial_cfg, "study_name"), _get(trial_cfg, "number")
    if study_name is None or number is None:
        raise ConfigError("trial.storage", storage, "needs trial.study_name and trial.number")
    _link(str(storage), str(study_name)).report(int(number), int(epoch), float(value))


def _get(cfg: Any, name: str) -> Any:
    return cfg.get(name) if hasattr(cfg, "get") else getattr(cfg, name, None)


class _StudyLink:
    """The study (and its pruning twin) as seen by one job process."""

    def __init__(self, storage_url: str, study_name: str):
        self.storage = open_storage(storage_url, key="trial.storage")
        try:
            self.study_id = self.storage.get_study_id_from_name(study_name)
        except KeyError:
            allowed = f"no such study in {storage_url}; the sweeper creates it"
            raise ConfigError("trial.study_name", study_name, allowed) from None
        sweep = self.storage.get_study_system_attrs(self.study_id).get(SWEEP, {})
        pruner = make_pruner(sweep.get("pruner"))
        self.study = self._load(study_name, pruner)
        twin = sweep.get("pruning_study")
        self.twin = self._load(twin, pruner) if twin else None
        self.twin_id = self.storage.get_study_id_from_name(twin) if twin else None
        self.multi_objective = len(self.study.directions) > 1

    def _load(self, name: str, pruner: optuna.pruners.BasePruner) -> optuna.Study:
        # The sampler is never asked here; RandomSampler keeps loading cheap.
        return optuna.load_study(
            study_name=name, storage=self.storage, sampler=RandomSampler(), pruner=pruner
        )

    def report(self, number: int, epoch: int, value: float) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        frozen = self.storage.get_trial(trial_id)
        if frozen.state != TrialState.RUNNING:
            raise optuna.TrialPruned(f"trial {number} is {frozen.state.name} in the study")
        study, report_id = self.study, trial_id
        if self.multi_objective:
            # Trial.report refuses several objectives; the storage keeps the learning curve.
            self.storage.set_trial_intermediate_value(trial_id, epoch, value)
            if self.twin is None:
                return
            twin_number = frozen.system_attrs[PRUNING_TRIAL]
            study = self.twin
            report_id = self.storage.get_trial_id_from_study_id_trial_number(
                self.twin_id, twin_number
            )
        trial = optuna.Trial(study, report_id)
        if epoch not in self.storage.get_trial(report_id).intermediate_values:
            trial.report(value, epoch)  # a resumed retry may repeat an epoch it inherited
        if trial.should_prune():
            self.storage.set_trial_system_attr(trial_id, PRUNED_AT, epoch)
            raise optuna.TrialPruned(f"trial {number} pruned at epoch {epoch} ({value:g})")


@functools.lru_cache(maxsize=8)
def _link(storage_url: str, study_name: str) -> _StudyLink:
    return _StudyLink(storage_url, study_name)
