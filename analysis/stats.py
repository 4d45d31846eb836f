"""Statistics for the regenerated tables: is a row's difference from the baseline real?

Seeds are the unit of evidence, and a seed fixes what the rows share (the initial values of
shared parameters, data order, augmentation: :mod:`van_ablate.model.keyed_init`), so rows
trained from one seed are paired. A row's difference from the baseline is judged over the seeds
both have, by the paired t-test (:func:`paired`, the primary test) with Wilcoxon's signed-rank
test beside it; Welch's unequal-variance test, which treats the seeds as independent, stands
beside them to show what pairing buys. A row is decided (:func:`decision`) when its paired
interval excludes 0 or lies within ±2 points. A row or baseline with fewer than 2 shared seeds
gets no interval and no test: it is shown, and draws no conclusion.

Where a seed fixes what the rows share (init of shared parameters, data order, augmentation),
:func:`paired` compares over the shared seeds instead (paired t, Wilcoxon beside it). Accuracy
is bounded, so :func:`betting_ci` gives a row's mean an interval that stays inside [0, 100],
and :func:`betting_cs` a confidence sequence, valid at every number of seeds at once, for
studies that add seeds while looking (:mod:`van_ablate.sweep.adaptive`). Both are the hedged
capital of Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting"
(JRSS-B 2024).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided significance level of the tests; the intervals are 1 - ALPHA
CONFIDENCE = 1 - ALPHA
PAPER_DELTA_MIN = 0.5  # points: the paper's smaller differences have no direction to agree with
TEST = "paired t-test"  # the primary test of a row against the baseline (see `paired`)
EQUIVALENCE = 2.0  # points: a row whose Δ interval lies within ± this is decided as "no change"
DIFFERS = "differs"
EQUIVALENT = f"within ±{EQUIVALENCE:g}"
OPEN = "open"
# The betting intervals' candidate means: the range in 2000 steps (0.05 points of accuracy).
BETTING_GRID = 2000
# A bet stakes at most this share of the capital (c in the paper's lambda <= c / m).
BETTING_TRUNCATION = 0.75


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval over ``n`` values (NaN bounds where there is none:
    a t interval needs 2 values)."""

    mean: float
    low: float
    high: float
    n: int


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Row minus baseline: the difference of means, its interval, Welch's p-value."""

    delta: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """``p < ALPHA``; False where there was no test (p is NaN)."""
        return bool(self.p_value < ALPHA)


@dataclasses.dataclass(frozen=True)
class PairedComparison(Comparison):
    """Row minus baseline over ``n`` shared seeds: the mean per-seed Δ, its paired-t interval and
    p-value, and the Wilcoxon signed-rank p-value beside them."""

    wilcoxon_p: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width, in points (NaN where there is no interval)."""
        return (self.high - self.low) / 2


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of ``values``.

    >>> i = mean_ci([1.0, 2.0, 3.0])
    >>> round(i.mean, 3), round(i.low, 3), round(i.high, 3), i.n
    (2.0, -0.484, 4.484, 3)
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, len(x))
    if x.std() == 0:  # scipy's interval is 0/0 here; every seed gave the same value
        return Interval(mean, mean, mean, len(x))
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return Interval(mean, float(low), float(high), len(x))


def welch(
    row: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> Comparison:
    """``mean(row) - mean(baseline)`` with Welch's interval and two-sided p-value.

    With fewer than 2 values on either side there is no test: the bounds and p are NaN. Two
    samples without any spread (every seed the same) differ surely if their means differ.

    >>> c = welch([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    >>> round(c.delta, 3), round(c.p_value, 4), c.significant
    (2.0, 0.0705, False)
    """
    a, b = np.asarray(row, dtype=float), np.asarray(baseline, dtype=float)
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Comparison(delta, math.nan, math.nan, math.nan)
    if a.std() == 0 and b.std() == 0:  # scipy's t is 0/0 here; the difference is exact
        p = 1.0 if delta == 0 else 0.0
        return Comparison(delta, delta, delta, p)
    with warnings.catch_warnings():  # one sample without spread: the test is still exact
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
        low, high = result.confidence_interval(confidence)
    return Comparison(delta, float(low), float(high), float(result.pvalue))


def paired(
    row: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedComparison:
    """Row minus baseline over the seeds both have: mean per-seed Δ, its t interval, the paired
    t-test's p-value and the Wilcoxon signed-rank p-value.

    The paired t-test is the primary test: a seed trains every row, so whatever the seed adds to
    all rows alike (lucky data order, shared initial values) is in both values and cancels in
    the row's Δ for that seed, and only the spread of Δ across seeds is left (where seeds share
    nothing but data order, as on today's proxy, pairing gains nothing and may be wider).
    Wilcoxon stands beside it for Δs far from normal, but over n seeds its two-sided p is at
    least 2 / 2**n, so below 6 seeds it never reaches 0.05. Seeds only one side has are left
    out; fewer than 2 shared seeds give no interval and no test.

    >>> c = paired({0: 3.0, 1: 4.0, 2: 6.0}, {0: 1.0, 1: 2.0, 2: 3.0, 3: 9.0})
    >>> round(c.delta, 3), round(c.low, 3), round(c.high, 3), round(c.p_value, 4), c.n
    (2.333, 0.899, 3.768, 0.0198, 3)
    >>> c.wilcoxon_p
    0.25
    """
    seeds = sorted(set(row) & set(baseline))
    d = np.array([row[s] - baseline[s] for s in seeds], dtype=float)
    delta = float(d.mean()) if len(d) else math.nan
    if len(d) < 2:
        return PairedComparison(delta, math.nan, math.nan, math.nan, math.nan, len(d))
    if not d.any():  # scipy's statistics are 0/0 here; no seed moved
        return PairedComparison(0.0, 0.0, 0.0, 1.0, 1.0, len(d))
    wilcoxon_p = float(stats.wilcoxon(d).pvalue)
    if d.std() == 0:  # every seed moved by the same amount: the difference is exact
        return PairedComparison(delta, delta, delta, 0.0, wilcoxon_p, len(d))
    result = stats.ttest_1samp(d, 0.0)  # the paired t-test is the one-sample test of the Δs
    low, high = result.confidence_interval(confidence)
    return PairedComparison(
        delta, float(low), float(high), float(result.pvalue), wilcoxon_p, len(d)
    )


def decision(c: Comparison) -> str | None:
    """Whether an interval of Δ settles a row: :data:`DIFFERS` (it excludes 0),
    :data:`EQUIVALENT` (it lies within ±:data:`EQUIVALENCE` points), :data:`OPEN` (neither), or
    None where there is no interval.

    >>> decision(Comparison(-5.0, -8.0, -2.0, 0.01)), decision(Comparison(0.3, -1.5, 1.9, 0.6))
    ('differs', 'within ±2')
    >>> decision(Comparison(1.0, -3.0, 5.0, 0.5))
    'open'
    """
    if math.isnan(c.low):
        return None
    if c.low > 0 or c.high < 0:
        return DIFFERS
    if -EQUIVALENCE <= c.low and c.high <= EQUIVALENCE:
        return EQUIVALENT
    return OPEN


def betting_ci(
    values: Sequence[float], low: float, high: float, confidence: float = CONFIDENCE
) -> Interval:
    """Mean of ``values`` in ``[low, high]`` and its betting confidence interval, which never
    leaves the range (Waudby-Smith & Ramdas 2024, hedged capital with bets tuned for this n).

    Valid for any distribution on the range: a candidate mean is left out when a gambler who bets
    against it on the values, one at a time, multiplies her money by 1 / alpha. The price is
    width at small n, which no interval valid for every bounded distribution escapes: five
    seeds at 80 % cannot rule out a rare seed that fails outright.

    >>> i = betting_ci([95.0, 97.2, 66.0], 0.0, 100.0)  # Student t: [42.8, 129.3]
    >>> round(i.mean, 2), round(i.low, 2), round(i.high, 2)
    (86.07, 18.85, 100.0)
    """
    x = np.asarray(values, dtype=float)
    return _betting(x, low, high, confidence, fixed_n=len(x))[-1]


def betting_cs(
    values: Sequence[float], low: float, high: float, confidence: float = CONFIDENCE
) -> list[Interval]:
    """A confidence sequence for the mean of ``values`` in ``[low, high]``: one interval after
    each value, all of them covering the mean at once with probability ``confidence``.

    So a sequence may be watched after every new seed and stopped when it excludes a value,
    without raising the error rate: by Ville's inequality the hedged capital (a nonnegative
    martingale at the true mean) passes 1 / alpha at any time with probability at most alpha
    (Waudby-Smith & Ramdas 2024, hedged capital with predictable plug-in bets; Howard et al.
    2021).

    Using only the range, it is slow to exclude a value at small n: a Δ near -40 points, in
    [-100, 100], takes about 15 seeds (no seed may be ruled out as a rare +100).

    >>> cs = betting_cs([-40.0, -38.0, -43.0, -39.0, -41.0, -40.0] * 3, -100.0, 100.0)
    >>> next(i.n for i in cs if i.high < 0), all(i.high < 0 for i in cs[14:])
    (15, True)
    """
    return _betting(np.asarray(values, dtype=float), low, high, confidence, fixed_n=None)


def _betting(
    values: np.ndarray, low: float, high: float, confidence: float, fixed_n: int | None
) -> list[Interval]:
    """The hedged-capital intervals after each value (running intersection), on a grid of means.

    Written here: the `confseq` package pins pybind11 2.6, which does not build on Python 3.11.
    """
    if len(values) == 0:
        return [Interval(math.nan, math.nan, math.nan, 0)]
    alpha, span = 1 - confidence, high - low
    x = (values - low) / span
    if np.any((x < 0) | (x > 1)):
        raise ValueError(f"values must lie in [{low}, {high}]; got {values.min()}..{values.max()}")
    t = np.arange(1, len(x) + 1)
    mu = (0.5 + np.cumsum(x)) / (
        t + 1
    )  # running mean and variance, regularised by one made-up value
    var = (0.25 + np.cumsum((x - mu) ** 2)) / (t + 1)
    var_before = np.append(0.25, var[:-1])  # predictable: bet t sees values 1..t-1 only
    horizon = t * np.log1p(t) if fixed_n is None else fixed_n
    bet = np.sqrt(2 * np.log(2 / alpha) / (var_before * horizon))
    m = np.linspace(0.0, 1.0, BETTING_GRID + 1)[:, None]
    with np.errstate(divide="ignore"):
        up = np.minimum(bet, BETTING_TRUNCATION / m)
        down = np.minimum(bet, BETTING_TRUNCATION / (1 - m))
    capital = np.maximum(
        np.cumprod(1 + up * (x - m), axis=1), np.cumprod(1 - down * (x - m), axis=1)
    )
    kept = np.maximum.accumulate(capital / 2, axis=1) < 1 / alpha
    step, out = 1 / BETTING_GRID, []
    for n in t:
        inside = m[kept[:, n - 1], 0]
        # one grid step wider on each side, so a mean between two grid points is not lost
        lo, hi = (inside[0] - step, inside[-1] + step) if len(inside) else (0.0, 1.0)
        lo, hi = low + span * max(lo, 0.0), low + span * min(hi, 1.0)
        out.append(Interval(float(values[:n].mean()), float(lo), float(hi), int(n)))
    return out


def agrees(delta: float, paper_delta: float) -> bool | None:
    """Whether our Δ has the paper's sign; None where the paper's |Δ| < 0.5 points or either is
    missing (no direction to agree with).

    >>> agrees(-1.2, -3.1), agrees(0.4, -3.1), agrees(2.0, 0.3)
    (True, False, None)
    """
    if any(_missing(x) for x in (delta, paper_delta)) or abs(paper_delta) < PAPER_DELTA_MIN:
        return None
    return (delta > 0) == (paper_delta > 0) and delta != 0


def _missing(x: float | None) -> bool:
    """True for None and NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))
