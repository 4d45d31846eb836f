"""How many sweep processes share one study and still finish exactly ``n_trials``.

Every decision that depends on other processes is taken inside :func:`study_lock`: a process
fails the trials whose owner died or whose job ended without a result (and enqueues their
parameters once, Optuna's ``failed_trial`` convention, so the retry resumes from the job's
checkpoint), then takes the next trial only while the trials that count stay below
``n_trials``. A trial that was failed and retried no longer counts; its retry does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from van_ablate.sweep.storage import Worker, has_trial_heartbeats, is_alive, optuna_experimental

SWEEP = "van_ablate.sweep"  # study system attr: search space, directions, pruner, ...
OWNER = "van_ablate.worker"  # system attr: the sweep process that runs the trial
PRUNED_AT = "van_ablate.pruned_at_epoch"  # system attr: set by the job when its pruner stops it
PRUNING_TRIAL = "van_ablate.pruning_trial"  # system attr: its twin in the pruning study
JOINED = "van_ablate.processes_joined"  # study system attr: sweep processes started on it
SUPERSEDED = "van_ablate.superseded"  # system attr: failed as stale, its retry counts instead
REASON = "reason"  # user attr: why a trial failed (or why it was retried)
STALE = "failed by Optuna's heartbeat check"
RETRIED_FROM = "failed_trial"  # system attr set by Optuna's retry callbacks, kept the same here


def sweep_objective(sweep: Mapping[str, Any]) -> list[str] | None:
    """The objective (results fields) a study's :data:`SWEEP` attr holds under ``objective``.

    Studies swept before it took the app's key name hold it as ``objectives``; they resume.
    """
    return sweep.get("objective", sweep.get("objectives"))


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count towards ``n_trials``: all but the stale ones that were retried.

    A retry lists the trials it replaces in ``retry_history`` (Optuna's
    :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` and :func:`fail_stale` alike).
    """
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if not t.system_attrs.get(SUPERSEDED) and t.number not in replaced]


def reason(trial: FrozenTrial) -> str:
    """Why a trial failed; Optuna's stale-trial check fails a trial without a word."""
    return trial.user_attrs.get(REASON, f"stale: no heartbeat from its sweep process ({STALE})")


def root_number(trial: FrozenTrial) -> int:
    """The number of the first trial of a retry chain (its run directory is reused)."""
    return int(trial.system_attrs.get(RETRIED_FROM, trial.number))


def state_counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """``{"complete": n, "pruned": n, "fail": n, "running": n, "waiting": n, "retried": n}``."""
    counts = Counter(t.state.name.lower() for t in counted(trials))
    out = {s: counts.get(s, 0) for s in ("complete", "pruned", "fail", "running", "waiting")}
    out["retried"] = len(trials) - len(counted(trials))
    return out


def join(storage: BaseStorage, study_id: int) -> int:
    """Count this process in: the number of sweep processes that joined the study before it.

    Call it while holding the study lock: 0 for the first process ever on a study, then 1, 2, ...
    for processes started beside it and for every later resumption.
    """
    joined = int(storage.get_study_system_attrs(study_id).get(JOINED, 0))
    storage.set_study_system_attr(study_id, JOINED, joined + 1)
    return joined


def fail_stale(
    study: optuna.Study,
    storage: BaseStorage,
    study_id: int,
    stale_after_s: float,
    retry: bool = True,
) -> list[FrozenTrial]:
    """Fail RUNNING trials whose sweep process is gone; re-enqueue each one's parameters once.

    Call it while holding :func:`~van_ablate.sweep.storage.study_lock`. Returns the failed trials.
    An SQL storage with heartbeats does this itself (:func:`optuna.storages.fail_stale_trials`);
    a journal has none, so the owner's liveness is checked here.
    """
    if has_trial_heartbeats(storage):
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        with optuna_experimental():
            optuna.storages.fail_stale_trials(study)
        now = {t.number: t for t in study.get_trials(deepcopy=False)}
        return [now[t.number] for t in running if now[t.number].state == TrialState.FAIL]
    attrs = storage.get_study_system_attrs(study_id)
    stale = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not is_alive(Worker.from_dict(t.system_attrs.get(OWNER)), attrs, stale_after_s)
    ]
    for t in stale:
        owner = t.system_attrs.get(OWNER) or {}
        reason = f"stale: sweep process {owner.get('host')}:{owner.get('pid')} stopped while it ran"
        fail(study, storage, study_id, t, reason, retry)
    return stale


def fail(
    study: optuna.Study,
    storage: BaseStorage,
    study_id: int,
    trial: FrozenTrial,
    reason: str,
    retry: bool = True,
) -> bool:
    """Fail ``trial`` with ``reason``; unless it is a retry itself, enqueue its parameters once.

    Call it while holding the study lock. The failed trial then no longer counts towards
    ``n_trials`` (its retry does). Returns whether a retry was enqueued.
    """
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    again = retry and RETRIED_FROM not in trial.system_attrs
    storage.set_trial_user_attr(trial_id, REASON, reason + ("; retried" if again else ""))
    if again:
        storage.set_trial_system_attr(trial_id, SUPERSEDED, True)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if again:
        study.add_trial(_retry_of(trial))
    return again


def _retry_of(trial: FrozenTrial) -> FrozenTrial:
    system_attrs: dict[str, Any] = {
        "fixed_params": trial.params,
        RETRIED_FROM: root_number(trial),
        "retry_history": [*trial.system_attrs.get("retry_history", []), trial.number],
    }
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k != REASON}
    return optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=user_attrs,
        system_attrs=system_attrs,
        intermediate_values=trial.intermediate_values,
    )


def take_trial(
    study: optuna.Study, storage: BaseStorage, n_trials: int, worker: Worker
) -> optuna.Trial | None:
    """The next trial for ``worker``: a waiting one first, else a new one while under budget.

    Call it while holding the study lock, after :func:`fail_stale`.
    """
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and len(counted(trials)) >= n_trials:
        return None
    with optuna_experimental():
        trial = study.ask()
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_system_attr(trial_id, OWNER, worker.to_dict())
    return trial
