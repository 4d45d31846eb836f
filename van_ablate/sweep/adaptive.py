"""Adaptive seeds for ablation studies: the next seed goes to the row whose Δ is least known.

A grid study (``experiments/study/table3.yaml``) trains every row on the same seeds. This
sampler trains each row only until its paired Δ against the baseline (``stats.paired``) is
known to ``target`` points, and spends the seeds it saves on the rows that need them. It
decides from the study's trials alone and keeps no state of its own, so a rerun on the same
storage continues where the last one stopped.

The rule:

1. Every row gets ``min_seeds`` seeds first, in seed order (seed 0 of every row before seed 1
   of any); the baseline gets seed k before or with any row's seed k, so every Δ has its pair.
2. Then the next seed goes to the open row whose Δ interval is widest relative to ``target``
   (seeds still running count as if they will keep today's spread).
3. A row stops when its paired-t interval's half-width is at most ``target`` ("decided" if the
   interval excludes 0 or lies within ±``equivalence``, else "precise"), when its confidence
   sequence excludes 0 (only with ``anytime_stop``: "decided (anytime)"), when its
   alpha-spending interval excludes 0 (only with ``early_stop``: "decided (early)"), or when it has
   ``max_seeds`` ("max seeds"). Once every row has stopped, the sampler calls ``study.stop()``.

Which interval is valid under this stopping:

- A row's Δs are read in seed order, whatever order the jobs finish in, so a stop is a stopping
  time of one fixed sequence of Δs, not of the cluster's timing.
- Steps 2 and 3 read the interval's width (the spread of Δ), never its centre or p-value.
  That is not enough for the t interval over all n seeds read: a row stops early when its
  first few Δs happen to agree, and the interval then trusts a spread that is too small.
  Simulated with Δ = 0 (normal, sd 6, target 4, at most 20 seeds), 8.7 % of rows end with an
  interval that excludes 0 instead of 5 % at ``min_seeds`` = 3, 7 % at 5, 5 % at 8
  (``tests/test_adaptive.py``).
- ``two_stage`` makes it exact for normal Δ (Stein 1945): the spread and its t quantile come
  from the first ``min_seeds`` Δs only, so the seeds a row gets depend on those alone, and the
  interval over all n seeds has its 95 %. The price is seeds: at ``min_seeds`` = 5 about 1.3 to
  1.4 times the running rule's, at 3 about 2 times (t with 2 degrees of freedom is 4.3).
- ``early_stop`` stops a row as soon as its paired t interval at level 1 - alpha / K
  excludes 0, K = max_seeds - min_seeds + 1 being the most looks a row can get ("decided
  (early)"). Bonferroni alpha spending: each look spends alpha / K, so by the union bound the
  chance of any false "decided (early)" is at most alpha under any stopping and allocation,
  and each look's t interval is exact at its n for normal Δs. It decides a large Δ at
  ``min_seeds`` (at K = 4, n = 3: t = 8.9 instead of 4.3), which the range-only confidence
  sequence below cannot do before about 15 seeds.
- The confidence sequence (``stats.betting_cs`` over [-100, 100]) covers the true Δ at every n
  at once (Ville's inequality), for any bounded Δ, so stopping at its first exclusion of 0
  keeps a false "decided (anytime)" below 5 %, whatever else the rule does. Knowing only the
  range, it needs about 15 seeds for a Δ of 40 points. With both stops on, a row's chance of a
  false "decided" is at most the two chances added.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.logging import get_logger
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import t as student_t

from van_ablate import checks
from van_ablate.analysis import stats

__all__ = ["AdaptiveSampler", "Record", "RowStatus", "Rule", "next_point", "row_status"]

KEY = "hydra.sweeper.sampler"
DELTA_RANGE = 100.0  # the objective is top-1 in percent, so a Δ lies in [-100, 100]
CHOICE = "van_ablate.adaptive.choice"  # trial system attr: [row, seed] the sampler chose
SURPLUS = "van_ablate.adaptive.surplus"  # trial system attr: asked with nothing left to train
PENDING = ("RUNNING", "WAITING")

_logger = get_logger(__name__)


class Record(NamedTuple):
    """One trained (or training) point: its row, seed, objective value and Optuna state."""

    row: Any
    seed: int
    value: float | None
    state: TrialState | str


@dataclasses.dataclass(frozen=True)
class Rule:
    """The allocation rule's settings, checked when built.

    >>> Rule(rows=("baseline", "no_gate"), baseline="baseline", min_seeds=3, max_seeds=10)
    ... # doctest: +ELLIPSIS
    Rule(rows=('baseline', 'no_gate'), baseline='baseline', min_seeds=3, max_seeds=10, ...)
    """

    rows: tuple[Any, ...]
    baseline: Any
    min_seeds: int = 3
    max_seeds: int = 10
    target: float = 5.0
    equivalence: float = 2.0
    anytime_stop: bool = False
    two_stage: bool = False
    early_stop: bool = False

    def __post_init__(self) -> None:
        checks.one_of(f"{KEY}.baseline", self.baseline, self.rows)
        checks.at_least(f"{KEY}.min_seeds", self.min_seeds, 2)
        checks.at_least(f"{KEY}.max_seeds", self.max_seeds, self.min_seeds)
        checks.above(f"{KEY}.target", self.target, 0.0)
        checks.in_range(f"{KEY}.equivalence", self.equivalence, 0.0, DELTA_RANGE)

    @property
    def compared(self) -> tuple[Any, ...]:
        """The rows compared with the baseline, in their order."""
        return tuple(r for r in self.rows if r != self.baseline)


@dataclasses.dataclass(frozen=True)
class RowStatus:
    """Where one row stands: the pairs the rule read (up to its stop) and why it stopped.

    ``values`` and ``baseline`` map seed -> top-1 over the pairs read; ``half_width`` is the
    rule's interval around their Δ (the paired t's, or Stein's with ``two_stage``; inf below
    2 pairs); ``seeds`` counts the seeds asked for the row, whatever became of them;
    ``pending`` those not read yet.
    """

    row: Any
    values: dict[int, float]
    baseline: dict[int, float]
    half_width: float
    seeds: int
    pending: int
    stop: str | None

    @functools.cached_property
    def paired(self) -> stats.PairedComparison:
        """Δ, its paired-t interval, the paired t and Wilcoxon p-values."""
        return stats.paired(self.values, self.baseline)

    @functools.cached_property
    def sequence(self) -> stats.Interval:
        """The confidence sequence for Δ at the last pair read (valid at every n at once)."""
        deltas = [self.values[s] - self.baseline[s] for s in sorted(self.values)]
        return stats.betting_cs(deltas, -DELTA_RANGE, DELTA_RANGE)[-1]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def interval(self) -> tuple[float, float]:
        """The interval the rule decides on: Δ ± ``half_width``."""
        return self.paired.delta - self.half_width, self.paired.delta + self.half_width

    @property
    def projected_half_width(self) -> float:
        """The t half-width once the pending seeds are read, if they keep today's spread."""
        n, m = self.n, self.n + self.pending
        if n < 2:
            return math.inf
        return self.half_width * _t(m) / _t(n) * math.sqrt(n / m)


def row_status(records: Iterable[Sequence[Any]], rule: Rule) -> dict[Any, RowStatus]:
    """Each compared row's status, from ``(row, seed, value, state)`` records.

    Only COMPLETE records have values; RUNNING and WAITING ones are pending; the others (FAIL,
    PRUNED) are seeds lost. A seed trained twice counts once (its first value).

    >>> rule = Rule(("base", "k7"), "base", min_seeds=3, target=3.0)
    >>> runs = {"base": [80.0, 82.0, 81.0], "k7": [60.0, 61.0, 60.5]}
    >>> s = row_status([(r, i, v, "COMPLETE") for r in runs for i, v in enumerate(runs[r])], rule)
    >>> s["k7"].n, s["k7"].paired.delta, round(s["k7"].paired.half_width, 2), s["k7"].stop
    (3, -20.5, 1.24, 'decided')
    """
    outcome = _outcomes(records)
    return {row: _row_status(row, outcome, rule) for row in rule.compared}


def next_point(records: Iterable[Sequence[Any]], rule: Rule) -> tuple[Any, int] | None:
    """The ``(row, seed)`` to train next under the rule, or None when nothing is left to ask
    (every row stopped, or the open ones wait on their running seeds at ``max_seeds``).

    >>> rule = Rule(("base", "k7", "k9"), "base", min_seeds=2)
    >>> next_point([], rule), next_point([("base", 0, None, "RUNNING")], rule)
    (('base', 0), ('k7', 0))
    """
    records = [Record(*r) for r in records]
    status = row_status(records, rule)
    asked: dict[Any, set[int]] = {row: set() for row in rule.rows}
    for r in records:
        asked.setdefault(r.row, set()).add(int(r.seed))
    open_rows = [row for row, s in status.items() if s.stop is None and s.seeds < rule.max_seeds]
    if not open_rows:
        return None
    starting = [row for row in open_rows if status[row].seeds < rule.min_seeds]
    if starting:  # breadth first: seed k of every row before seed k + 1 of any
        row = min(starting, key=lambda r: status[r].seeds)
    else:
        row = max(open_rows, key=lambda r: status[r].projected_half_width / rule.target)
    seed = _first_free(asked[row])
    if seed not in asked[rule.baseline]:  # the baseline first, so the row's Δ has its pair
        return rule.baseline, _first_free(asked[rule.baseline])
    return row, seed


class AdaptiveSampler(BaseSampler):
    """Optuna sampler that asks for ``(row, seed)`` points by the rule of this module.

    It chooses ``row_param`` and ``seed_param`` only; the rest of a trial is fixed. Like
    Optuna's ``GridSampler``, it stores its choice in the trial (so RUNNING trials count as
    taken, and two workers asking in turn never get the same point) and calls ``study.stop()``
    once every row has stopped, which outside ``study.optimize`` raises RuntimeError after the
    trial is stored; ask-and-tell loops check :meth:`is_exhausted` before asking.

    >>> import optuna
    >>> sampler = AdaptiveSampler(["baseline", "no_gate"], "baseline", min_seeds=2)
    >>> study = optuna.create_study(sampler=sampler, direction="maximize")
    >>> trial = study.ask()
    >>> trial.suggest_categorical("+ablation", ["baseline", "no_gate"]), trial.suggest_int(
    ...     "seed", 0, 9)
    ('baseline', 0)
    """

    def __init__(
        self,
        rows: Sequence[Any],
        baseline: Any,
        row_param: str = "+ablation",
        seed_param: str = "seed",
        min_seeds: int = 3,
        max_seeds: int = 10,
        target: float = 5.0,
        equivalence: float = 2.0,
        anytime_stop: bool = False,
        two_stage: bool = False,
        early_stop: bool = False,
        seed: int | None = None,  # the rule draws nothing at random; every sampler takes a seed
    ) -> None:
        self.rule = Rule(
            tuple(rows),
            baseline,
            min_seeds,
            max_seeds,
            target,
            equivalence,
            anytime_stop,
            two_stage,
            early_stop,
        )
        self.row_param, self.seed_param = row_param, seed_param

    def records(self, study: Study) -> list[Record]:
        """The study's trials as records (trials without a point of this rule are left out)."""
        found = (self._record(t, t.state, t.values) for t in study.get_trials(deepcopy=False))
        return [r for r in found if r is not None]

    def is_exhausted(self, study: Study) -> bool:
        """True when there is no point left to ask now."""
        return next_point(self.records(study), self.rule) is None

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self.row_param in trial.params or "fixed_params" in trial.system_attrs:
            return  # a retried or enqueued trial keeps its point
        point = next_point(self.records(study), self.rule)
        attrs: dict[str, Any] = {CHOICE: list(point or (self.rule.baseline, 0))}
        if point is None:  # as GridSampler does when exhausted: repeat a point, say so
            _logger.warning("AdaptiveSampler: nothing left to train; repeating baseline seed 0")
            attrs[SURPLUS] = True
        for key, value in attrs.items():  # kept in the trial, as GridSampler keeps its grid_id
            study._storage.set_trial_system_attr(trial._trial_id, key, value)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        row, seed = trial.system_attrs[CHOICE]
        if param_name == self.row_param:
            return row
        if param_name == self.seed_param:
            return seed
        mine = f"{self.row_param} and {self.seed_param}"
        raise ValueError(f"{param_name}: the adaptive sampler chooses only {mine}")

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        # the storage still has this trial RUNNING here: read it with the state it is told
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        found = [self._record(t, t.state, t.values) for t in others]
        found.append(self._record(trial, state, values))
        status = row_status([r for r in found if r is not None], self.rule)
        if all(s.stop is not None for s in status.values()):
            study.stop()

    def _record(
        self, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> Record | None:
        if trial.system_attrs.get(SURPLUS):
            return None
        if self.row_param in trial.params and self.seed_param in trial.params:
            point = (trial.params[self.row_param], trial.params[self.seed_param])
        elif CHOICE in trial.system_attrs:  # asked, parameters not suggested yet
            point = tuple(trial.system_attrs[CHOICE])
        else:
            return None
        value = values[0] if state == TrialState.COMPLETE and values else None
        return Record(point[0], int(point[1]), value, state)


def _outcomes(records: Iterable[Sequence[Any]]) -> dict[tuple[Any, int], float | None]:
    """(row, seed) -> its value; None while pending; NaN when it finished without one."""
    outcome: dict[tuple[Any, int], float | None] = {}
    for row, seed, value, state in records:
        name = state if isinstance(state, str) else state.name
        key, known = (row, int(seed)), outcome.get((row, int(seed)), math.nan)
        if name == "COMPLETE" and value is not None:
            outcome[key] = known if _is_value(known) else float(value)
        elif name in PENDING:
            outcome[key] = known if _is_value(known) else None
        else:
            outcome.setdefault(key, math.nan)
    return outcome


def _row_status(row: Any, outcome: dict[tuple[Any, int], float | None], rule: Rule) -> RowStatus:
    seeds = sorted(s for r, s in outcome if r == row)
    read: list[tuple[int, float, float]] = []  # seeds in order, up to the first pending one
    for seed in seeds:
        value, base = outcome[row, seed], outcome.get((rule.baseline, seed))
        if value is None or base is None:
            break
        read.append((seed, value, base))
    pairs = [(s, v, b) for s, v, b in read if not (math.isnan(v) or math.isnan(b))]
    deltas = np.array([v - b for _, v, b in pairs])
    half_widths = _prefix_half_widths(deltas, rule.min_seeds if rule.two_stage else None)
    cs = stats.betting_cs(deltas, -DELTA_RANGE, DELTA_RANGE) if rule.anytime_stop else []
    stop, used, n = None, len(read), len(pairs)
    k = 0
    for i, (_, value, base) in enumerate(read, start=1):
        k += not (math.isnan(value) or math.isnan(base))
        stop = _stop(deltas[:k], half_widths[k - 1] if k else math.inf, cs[k - 1 : k], i, rule)
        if stop is not None:
            used, n = i, k
            break
    return RowStatus(
        row,
        values={s: v for s, v, _ in pairs[:n]},
        baseline={s: b for s, _, b in pairs[:n]},
        half_width=float(half_widths[n - 1]) if n else math.inf,
        seeds=len(seeds),
        pending=len(seeds) - used,
        stop=stop,
    )


def _stop(
    deltas: np.ndarray, half_width: float, cs: list[stats.Interval], read: int, rule: Rule
) -> str | None:
    """Why a row stops after reading ``read`` seeds (``deltas``: its Δs so far), or None."""
    if len(deltas) >= rule.min_seeds:
        if cs and not cs[0].low <= 0.0 <= cs[0].high:
            return "decided (anytime)"
        if rule.early_stop and len(deltas) > 1 and _excludes_zero_early(deltas, rule):
            return "decided (early)"
        if half_width <= rule.target:
            low, high = deltas.mean() - half_width, deltas.mean() + half_width
            inside = -rule.equivalence <= low and high <= rule.equivalence
            return "decided" if low > 0 or high < 0 or inside else "precise"
    return "max seeds" if read >= rule.max_seeds else None


def _excludes_zero_early(deltas: np.ndarray, rule: Rule) -> bool:
    """Whether the paired t interval over ``deltas`` at level 1 - alpha / looks excludes 0.

    Bonferroni alpha spending: a row is looked at with n = min_seeds ... max_seeds Δs, at most
    ``looks`` times, and each look spends alpha / looks; by the union bound the chance that any
    look falsely excludes 0 is at most alpha, whatever the looks led to (which row got the next
    seed, when a row stopped). Each look's t interval is exact at its n for normal Δs.
    """
    looks = rule.max_seeds - max(rule.min_seeds, 2) + 1
    n = len(deltas)
    level = 1 - (1 - stats.CONFIDENCE) / looks / 2
    half = float(student_t.ppf(level, n - 1)) * float(np.std(deltas, ddof=1)) / math.sqrt(n)
    return abs(float(np.mean(deltas))) > half


def _prefix_half_widths(deltas: np.ndarray, stage: int | None = None) -> np.ndarray:
    """The t half-width over the first k Δs, for every k (inf where k < 2): the interval
    stats.paired gives. With ``stage`` (Stein's two-stage), the spread and the t quantile come
    from the first ``stage`` Δs only (inf before them)."""
    k = np.arange(1, len(deltas) + 1)
    mean = np.cumsum(deltas) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.maximum(np.cumsum(deltas**2) - k * mean**2, 0.0) / (k - 1)
        t = np.array([_t(int(i)) for i in k])
        if stage is not None and len(deltas) >= stage:
            var, t = np.full(len(k), var[stage - 1]), _t(stage)
        half = t * np.sqrt(var / k)
    return np.where(k >= (stage or 2), half, math.inf)


@functools.cache
def _t(n: int) -> float:
    """The two-sided t quantile of the intervals over ``n`` values (NaN for one value)."""
    return float(student_t.ppf(0.5 + stats.CONFIDENCE / 2, n - 1)) if n > 1 else math.nan


def _first_free(seeds: set[int]) -> int:
    return next(s for s in range(len(seeds) + 1) if s not in seeds)


def _is_value(x: float | None) -> bool:
    return x is not None and not math.isnan(x)
