"""How many sweep processes share one study and still finish exactly ``n_trials``.

A trial whose sweep process died, or whose job ended without a result, is failed and its
parameters are enqueued once (Optuna's :data:`~van_ablate.sweep.storage.RETRY_ONCE`, so the
retry resumes from the job's checkpoint); failing is atomic in every storage, so one process
does it. A trial that was retried no longer counts towards ``n_trials``; its retry does. Only
taking a trial while the trials that count stay below ``n_trials`` needs the study lock.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from van_ablate.sweep.storage import (
    RETRY_ONCE,
    has_trial_heartbeats,
    is_alive,
    optuna_experimental,
    owner,
)

SWEEP = "van_ablate.sweep"  # study system attr: search space, objective, pruner, ...
OWNER = "van_ablate.worker"  # system attr: the sweep process that runs the trial
PRUNED_AT = "van_ablate.pruned_at_epoch"  # system attr: set by the job when its pruner stops it
PRUNING_TRIAL = "van_ablate.pruning_trial"  # system attr: its twin in the pruning study
JOINED = "van_ablate.processes_joined"  # study system attr: sweep processes started on it
REASON = "reason"  # user attr: why a trial failed (or why it was retried)
STALE = "failed by Optuna's heartbeat check"
RETRIED_FROM = "failed_trial"  # system attr set by Optuna's retry callback: the first trial


def sweep_objective(sweep: Mapping[str, Any]) -> list[str] | None:
    """The objective (results fields) a study's :data:`SWEEP` attr holds under ``objective``.

    Studies swept before it took the app's key name hold it as ``objectives``; they resume.
    """
    return sweep.get("objective", sweep.get("objectives"))


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count towards ``n_trials``: all but those a retry replaced (listed in
    its ``retry_history``, Optuna's record)."""
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if t.number not in replaced]


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
    study: optuna.Study, storage: BaseStorage, stale_after_s: float
) -> list[FrozenTrial]:
    """Fail RUNNING trials whose sweep process is gone, each retried once; returns them.

    An SQL storage with heartbeats does this itself (:func:`optuna.storages.fail_stale_trials`);
    a journal has no heartbeat, so its trials' owners are checked here.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if has_trial_heartbeats(storage):
        with optuna_experimental():
            optuna.storages.fail_stale_trials(study)
        now = study.get_trials(deepcopy=False)
        return [now[t.number] for t in running if now[t.number].state == TrialState.FAIL]
    stale = [t for t in running if not is_alive(t, OWNER, stale_after_s)]
    for t in stale:
        who = t.system_attrs.get(OWNER) or {}
        why = f"stale: sweep process {who.get('host')}:{who.get('pid')} stopped while it ran"
        fail(study, storage, t, why)
    return stale


def fail(study: optuna.Study, storage: BaseStorage, trial: FrozenTrial, why: str) -> bool:
    """Fail a running ``trial`` with a reason and, unless it is a retry itself, enqueue its
    parameters once; whether it was retried (False also when another process ended it first).
    """
    trial_id = trial_id_of(storage, study, trial.number)
    before = copy.deepcopy(storage.get_trial(trial_id))  # the retry starts without the reason
    again = RETRIED_FROM not in before.system_attrs
    try:
        storage.set_trial_user_attr(trial_id, REASON, why + ("; retried" if again else ""))
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    if again:
        RETRY_ONCE(study, before)
    return again


def take_trial(study: optuna.Study, storage: BaseStorage, n_trials: int) -> optuna.Trial | None:
    """The next trial for this process: a waiting one first, else a new one while under budget.

    Call it while holding the study lock, after :func:`fail_stale`. (Optuna's own cap,
    ``MaxTrialsCallback``, counts without a lock: processes started together overshoot it.)
    """
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and len(counted(trials)) >= n_trials:
        return None
    with optuna_experimental():
        trial = study.ask()
    storage.set_trial_system_attr(trial_id_of(storage, study, trial.number), OWNER, owner())
    return trial


def trial_id_of(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)
