"""Where a study lives, who is working on it, and a lock that works on any Optuna storage.

A storage is a journal file (the default, one per sweep directory; ``optuna-dashboard FILE``
opens it) or an SQLAlchemy URL (``postgresql://...`` for many machines). Sweep processes
coordinate through the storage only: :func:`study_lock` is a short critical section built from
Optuna's atomic study creation, and :class:`Worker` says which process owns a trial. Whether that
process is still alive: on an SQL storage, Optuna's per-trial heartbeat; on a journal, which has
none, the owner's pid (same host) and a heartbeat the process writes into the study.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.storages import (
    BaseStorage,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from van_ablate.checks import first_line
from van_ablate.errors import ConfigError

JOURNAL_NAME = "optuna_journal.log"
HEARTBEAT_KEY = "van_ablate.heartbeat."
_STORAGE_MODULES = ("journal._storage", "_rdb.storage", "_in_memory")
_CREATE_ATTEMPTS = 8


def open_storage(
    storage: str, key: str = "hydra.sweeper.storage", stale_after_s: float | None = None
) -> BaseStorage:
    """A journal file path or an SQLAlchemy URL as an Optuna storage; bad ones fail in one line.

    With ``stale_after_s``, an SQL storage records a heartbeat per running trial (Optuna's own
    mechanism): a trial without one for ``stale_after_s`` is failed by the next sweep process
    that looks, and retried once (:class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`).

    >>> open_storage("sweep/optuna_journal.log")  # doctest: +SKIP
    <optuna.storages.journal._storage.JournalStorage object at ...>
    """
    allowed = "must be a journal file path or an SQLAlchemy URL (sqlite:///x.db, postgresql://...)"
    try:
        if "://" in storage:
            return _open_rdb(storage, stale_after_s)
        path = Path(storage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:  # SQLAlchemy and OS errors alike: the URL cannot be opened
        raise ConfigError(key, storage, f"{allowed}; opening it failed: {first_line(e)}") from e


def sqlalchemy_url(storage: str) -> str:
    """``postgresql://`` means psycopg (the ``postgres`` extra) unless psycopg2 is installed.

    >>> sqlalchemy_url("sqlite:///x.db")
    'sqlite:///x.db'
    """
    url = make_url(storage)
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        if importlib.util.find_spec("psycopg") is not None:
            url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _open_rdb(storage: str, stale_after_s: float | None) -> RDBStorage:
    heartbeat: dict[str, Any] = {}
    if stale_after_s is not None:
        grace = max(2, math.ceil(stale_after_s))
        with optuna_experimental():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=1, inherit_intermediate_values=True)
        heartbeat = dict(
            heartbeat_interval=max(1, grace // 4),
            grace_period=grace,
            heartbeat_stale_trial_callback=retry,
        )
    url = sqlalchemy_url(storage)
    # Processes opening a fresh database together race to create Optuna's tables (PostgreSQL
    # raises UniqueViolation / DuplicateTable); Optuna has no lock for it, so the loser retries
    # and finds the tables made.
    with optuna_experimental():
        for _ in range(_CREATE_ATTEMPTS - 1):
            try:
                return RDBStorage(url, **heartbeat)
            except (IntegrityError, ProgrammingError):
                time.sleep(random.uniform(0.05, 0.5))
        return RDBStorage(url, **heartbeat)


@contextlib.contextmanager
def optuna_experimental() -> Iterator[None]:
    """Optuna's heartbeat API is marked experimental (and "meant for optimize()", which a sweep
    that launches jobs cannot use); its warnings would print on every start and trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)
        yield


@dataclass(frozen=True)
class Worker:
    """One sweep process: ``host`` + ``pid`` for a local liveness check, ``id`` for heartbeats."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Worker | None:
        if not isinstance(d, dict) or not {"host", "pid", "id"} <= set(d):
            return None
        return cls(host=d["host"], pid=int(d["pid"]), id=d["id"])


def is_alive(worker: Worker | None, study_attrs: dict[str, Any], stale_after_s: float) -> bool:
    """Whether ``worker`` still runs: its pid on this host, and a recent heartbeat.

    The heartbeat also catches a reused pid on this host, and is all there is for other hosts.
    """
    if worker is None:
        return False
    local = worker.host == socket.gethostname()
    if local and not _pid_alive(worker.pid):
        return False
    beat = study_attrs.get(HEARTBEAT_KEY + worker.id)
    if beat is None:
        return local
    return time.time() - float(beat) < stale_after_s


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def has_trial_heartbeats(storage: BaseStorage) -> bool:
    """Whether ``storage`` keeps Optuna's per-trial heartbeats (an SQL storage opened with them)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


class Heartbeat:
    """Calls ``beat`` now and then every ``interval_s`` until closed."""

    def __init__(self, beat: Callable[[], None], interval_s: float):
        self._beat, self._interval = beat, interval_s
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="sweeper-heartbeat", daemon=True)
        self._thread.start()

    @classmethod
    def of_worker(
        cls, storage: BaseStorage, study_id: int, worker: Worker, interval_s: float
    ) -> Heartbeat:
        """``worker``'s time in the study: how a journal storage tells a live process."""
        key = HEARTBEAT_KEY + worker.id
        return cls(lambda: storage.set_study_system_attr(study_id, key, time.time()), interval_s)

    @classmethod
    def of_trials(cls, storage: RDBStorage, trial_ids: Sequence[int]) -> Heartbeat:
        """Optuna's heartbeat of each of ``trial_ids`` at the storage's own interval."""

        def beat() -> None:
            for trial_id in trial_ids:
                storage.record_heartbeat(trial_id)

        return cls(beat, float(storage.get_heartbeat_interval() or 1))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):  # a missed beat only delays stale detection
                self._beat()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def study_lock(
    storage: BaseStorage,
    study_name: str,
    worker: Worker,
    stale_after_s: float = 120.0,
    poll_s: float = 0.05,
) -> Iterator[None]:
    """Hold a lock named after ``study_name`` across every process sharing ``storage``.

    Optuna creates a study name exactly once per storage (journal replay order, a unique key in
    SQL), so creating ``<study>.lock`` acquires and deleting it releases. A lock whose holder
    died, or that is older than ``stale_after_s``, is broken.
    """
    name = f"{study_name}.lock"
    first_seen: dict[int, float] = {}
    while True:
        try:
            with quiet_study_creation():
                lock_id = storage.create_new_study([StudyDirection.MINIMIZE], name)
        except DuplicatedStudyError:
            _break_if_stale(storage, name, stale_after_s, first_seen)
            time.sleep(poll_s)
            continue
        break
    try:
        storage.set_study_system_attr(lock_id, "holder", {**worker.to_dict(), "t": time.time()})
        yield
    finally:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)


@contextlib.contextmanager
def quiet_study_creation() -> Iterator[None]:
    """Storages log every study they create; a lock or a throwaway is not worth a line."""
    loggers = [logging.getLogger(f"optuna.storages.{m}") for m in _STORAGE_MODULES]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _break_if_stale(
    storage: BaseStorage, name: str, stale_after_s: float, first_seen: dict[int, float]
) -> None:
    try:
        lock_id = storage.get_study_id_from_name(name)
        holder = storage.get_study_system_attrs(lock_id).get("holder")
    except KeyError:
        return  # released meanwhile
    now = time.time()
    if holder is None:  # created, holder not written yet (or its process died right then)
        dead, since = False, first_seen.setdefault(lock_id, now)
    else:
        worker = Worker.from_dict(holder)
        dead = worker is not None and worker.host == socket.gethostname()
        dead = dead and not _pid_alive(worker.pid)
        since = float(holder.get("t", now))
    if dead or now - since > stale_after_s:
        with contextlib.suppress(KeyError):
            storage.delete_study(lock_id)
