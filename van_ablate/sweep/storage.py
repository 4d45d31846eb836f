"""Where a study lives, whether the process running a trial is alive, and a lock on a study.

A storage is a journal file (the default, one per sweep directory; ``optuna-dashboard FILE``
opens it) or an SQLAlchemy URL (``postgresql://...`` for many machines). Sweep processes
coordinate through the storage only. Whether a trial's sweep process is alive: on an SQL
storage, Optuna's per-trial heartbeat; on a journal, which has none, the owner's pid (same host)
and a heartbeat the process writes into the trial.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from van_ablate.checks import first_line
from van_ablate.errors import ConfigError

JOURNAL_NAME = "optuna_journal.log"
# Optuna's heartbeat is SQL-only: on a journal the sweeper keeps its own, a trial system attr.
HEARTBEAT = "van_ablate.heartbeat"
HOST = socket.gethostname()


@contextlib.contextmanager
def optuna_experimental() -> Iterator[None]:
    """Optuna's heartbeat API is marked experimental (and "meant for optimize()", which a sweep
    that launches jobs cannot use); its warnings would print on every start and trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)
        yield


with optuna_experimental():  # a stale trial's parameters run once more, where it left off
    RETRY_ONCE = RetryHeartbeatStaleTrialCallback(max_retry=1, inherit_intermediate_values=True)


def open_storage(
    storage: str, key: str = "hydra.sweeper.storage", stale_after_s: float | None = None
) -> BaseStorage:
    """A journal file path or an SQLAlchemy URL as an Optuna storage; bad ones fail in one line.

    With ``stale_after_s``, an SQL storage records a heartbeat per running trial (Optuna's own
    mechanism): a trial without one for ``stale_after_s`` is failed by the next sweep process
    that looks (:func:`optuna.storages.fail_stale_trials`), and retried once (:data:`RETRY_ONCE`).

    >>> open_storage("sweep/optuna_journal.log")  # doctest: +SKIP
    <optuna.storages.journal._storage.JournalStorage object at ...>
    """
    allowed = "must be a journal file path or an SQLAlchemy URL (sqlite:///x.db, postgresql://...)"
    try:
        if "://" in storage:
            return _open_rdb(storage, stale_after_s)
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(storage))
    except Exception as e:  # SQLAlchemy and OS errors alike: the URL cannot be opened
        raise ConfigError(key, storage, f"{allowed}; opening it failed: {first_line(e)}") from e


def sqlalchemy_url(storage: str) -> str:
    """``postgresql://`` means psycopg (the ``postgres`` extra), or psycopg2 where only that is
    installed (SQLAlchemy's own default is psycopg2 before 2.1, psycopg from 2.1).

    >>> sqlalchemy_url("sqlite:///x.db")
    'sqlite:///x.db'
    """
    url = make_url(storage)
    if url.drivername == "postgresql":
        for driver in ("psycopg", "psycopg2"):
            if importlib.util.find_spec(driver) is not None:
                url = url.set(drivername=f"postgresql+{driver}")
                break
    return url.render_as_string(hide_password=False)


def _open_rdb(storage: str, stale_after_s: float | None) -> RDBStorage:
    heartbeat: dict[str, Any] = {}
    if stale_after_s is not None:
        grace = max(2, math.ceil(stale_after_s))
        heartbeat = dict(
            heartbeat_interval=max(1, grace // 4),
            grace_period=grace,
            heartbeat_stale_trial_callback=RETRY_ONCE,
        )
    # Processes opening a fresh database together race to create Optuna's tables (PostgreSQL
    # raises UniqueViolation / DuplicateTable); Optuna has no lock for it, so the loser retries
    # and finds the tables made.
    with optuna_experimental():
        for _ in range(7):
            with contextlib.suppress(IntegrityError, ProgrammingError):
                return RDBStorage(sqlalchemy_url(storage), **heartbeat)
            time.sleep(random.uniform(0.05, 0.5))
        return RDBStorage(sqlalchemy_url(storage), **heartbeat)


def has_trial_heartbeats(storage: BaseStorage) -> bool:
    """Whether ``storage`` keeps Optuna's per-trial heartbeats (an SQL storage opened with them)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def owner() -> dict[str, Any]:
    """This sweep process, as a trial's owner (or the lock's holder) records it."""
    return {"host": HOST, "pid": os.getpid()}


def is_alive(trial: FrozenTrial, owner_key: str, stale_after_s: float) -> bool:
    """Whether the sweep process that owns a running trial (on a journal) still runs: its pid
    on this host, and a heartbeat (or the trial's start) less than ``stale_after_s`` ago.

    The heartbeat also catches a reused pid on this host, and is all there is for other hosts.
    """
    who = trial.system_attrs.get(owner_key) or {}
    if who.get("host") == HOST and not _pid_alive(int(who.get("pid", -1))):
        return False
    start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return time.time() - max(float(trial.system_attrs.get(HEARTBEAT, 0.0)), start) < stale_after_s


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie has ended, though its pid is still taken
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


@contextlib.contextmanager
def heartbeat(storage: BaseStorage, trial_ids: Sequence[int], interval_s: float) -> Iterator[None]:
    """Beat for ``trial_ids`` while their jobs run: Optuna's heartbeat on an SQL storage (at its
    own interval), else this process's time in each trial every ``interval_s``."""
    optuna_beats = has_trial_heartbeats(storage)
    if optuna_beats:
        interval_s = float(storage.get_heartbeat_interval() or 1)

    def beat(trial_id: int) -> None:
        if optuna_beats:
            storage.record_heartbeat(trial_id)
        else:
            storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    stop = threading.Event()

    def run() -> None:
        while True:
            for trial_id in trial_ids:
                with contextlib.suppress(Exception):  # a missed beat only delays stale detection
                    beat(trial_id)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=run, name="sweeper-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def study_lock(
    storage: BaseStorage, study_name: str, stale_after_s: float = 120.0
) -> Iterator[None]:
    """Hold a lock named after ``study_name`` across every process sharing ``storage``.

    Optuna has none; it creates a study name exactly once per storage (journal replay order, a
    unique key in SQL), so creating ``<study>.lock`` acquires and deleting it releases. A lock
    whose holder died, or that is older than ``stale_after_s``, is broken.
    """
    name, first_seen = f"{study_name}.lock", {}
    while True:
        try:
            with quiet_optuna():
                lock_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
            break
        except DuplicatedStudyError:
            with contextlib.suppress(KeyError):  # KeyError: released meanwhile
                lock_id = storage.get_study_id_from_name(name)
                holder = storage.get_study_system_attrs(lock_id).get("holder") or {}
                dead = holder.get("host") == HOST and not _pid_alive(holder["pid"])
                # A lock without a holder yet: created a moment ago, or its creator died then.
                since = holder.get("t", first_seen.setdefault(lock_id, time.time()))
                if dead or time.time() - since > stale_after_s:
                    storage.delete_study(lock_id)
            time.sleep(0.05)
    try:
        storage.set_study_system_attr(lock_id, "holder", {**owner(), "t": time.time()})
        yield
    finally:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every study it creates; a lock or a throwaway is not worth a line."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)
