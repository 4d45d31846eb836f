"""What became of one job: the Optuna state, values and reason to tell its trial.

A job's outcome comes from Hydra's ``JobReturn`` (value or exception) and from the
``results.json`` it left in its run directory (status ``pruned`` / ``diverged`` / ``failed`` and
the reason). Failures are data: a raise, a divergence or a NaN objective is a FAIL trial with a
one-line reason; a job that ended without any result (:class:`NoResult`: cancelled, node failure,
time limit) is a FAIL trial to retry once. Constraints such as ``complexity.macs <= 1.0e9`` are
evaluated here as Optuna's constraint values (<= 0 feasible).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from van_ablate.checks import select
from van_ablate.errors import ConfigError, Diverged, Preempted

RESULTS_FILE = "results.json"
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``field op bound``; :meth:`value` is Optuna's constraint value (feasible when <= 0)."""

    field: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str, key: str = "hydra.sweeper.constraints") -> Constraint:
        """``"complexity.macs <= 1.0e9"`` -> ``Constraint("complexity.macs", "<=", 1e9)``."""
        match = _CONSTRAINT.match(str(text))
        bound = _float(match.group(3)) if match else None
        if match is None or bound is None:
            raise ConfigError(key, text, "must read '<results field> <= <number>' (or >=)")
        return cls(match.group(1), match.group(2), bound)

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.bound:g}"

    def value(self, x: float) -> float:
        """x - bound for an upper bound, bound - x for a lower one."""
        return x - self.bound if self.op == "<=" else self.bound - x


class NoResult(Exception):
    """A job ended without a result (``SLURM job 12_1 CANCELLED by 0``): fail, retry once."""


@dataclass
class Outcome:
    """The state, values and reason for ``study.tell``, plus what to keep as user attrs."""

    state: TrialState
    values: list[float] | None = None
    reason: str | None = None
    results: dict[str, Any] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    retry: bool = False  # the job never finished: run the same parameters once more


def read_outcome(
    ret: JobReturn,
    run_dir: Path,
    n_objectives: int,
    pruned_at: int | None = None,
) -> Outcome:
    """Turn a finished job into an :class:`Outcome`.

    ``pruned_at`` is the epoch at which the job's reporter raised ``TrialPruned`` (a system attr
    of the trial), so a pruned job is recognised even without a ``results.json``.
    """
    results = load_results(run_dir)
    status = (results or {}).get("status")
    if ret.status == JobStatus.FAILED:
        err = ret._return_value  # JobReturn keeps the exception here (no public accessor)
        if isinstance(err, optuna.TrialPruned):
            return Outcome(TrialState.PRUNED, None, None, results)
        if isinstance(err, (NoResult, Preempted)):  # Preempted: a signal stopped this process
            return Outcome(TrialState.FAIL, None, str(err), results, retry=True)
        if isinstance(err, Diverged) or status == "diverged":
            reason = (results or {}).get("reason") or str(err)
            return Outcome(TrialState.FAIL, None, f"diverged: {reason}", results)
        return Outcome(TrialState.FAIL, None, one_line(err), results)

    try:
        values = as_values(ret.return_value, n_objectives)
    except ValueError as e:
        return Outcome(TrialState.FAIL, None, str(e), results)
    if status == "pruned" or pruned_at is not None:
        return Outcome(TrialState.PRUNED, None, None, results, {"objective_values": values})
    if status in ("diverged", "failed"):
        reason = f"{status}: {(results or {}).get('reason')}"
        return Outcome(TrialState.FAIL, None, reason, results)
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        return Outcome(TrialState.FAIL, None, f"objective {bad[0]} is {values[bad[0]]}", results)
    return Outcome(TrialState.COMPLETE, values, None, results)


def as_values(returned: Any, n_objectives: int) -> list[float]:
    """A job's return value as one float per objective; ValueError says what was wrong."""
    if isinstance(returned, (str, bytes)) or not hasattr(returned, "__iter__"):
        items = [returned]
    else:
        items = list(returned)  # list, tuple, ListConfig
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ValueError(f"the job returned {returned!r}, not a number per objective") from None
    if len(values) != n_objectives:
        raise ValueError(f"the job returned {len(values)} values for {n_objectives} objectives")
    return values


def constraint_values(
    constraints: Sequence[Constraint],
    results: dict[str, Any] | None,
    objectives: Sequence[str],
    values: Sequence[float] | None,
) -> dict[str, float]:
    """``{str(constraint): value}``, reading each field from results.json or the objectives."""
    out = {}
    for c in constraints:
        x = _float(select(results, c.field))
        if x is None and values is not None and c.field in objectives:
            x = values[list(objectives).index(c.field)]
        if x is None or not math.isfinite(x):
            raise KeyError(f"constraint field {c.field} is missing from {RESULTS_FILE}")
        out[str(c)] = c.value(x)
    return out


def load_results(run_dir: Path) -> dict[str, Any] | None:
    """The job's results.json, or None when it wrote none (or a torn one)."""
    try:
        return json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _float(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
