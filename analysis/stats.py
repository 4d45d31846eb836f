"""Statistics for the regenerated tables: is a row's difference from the baseline real?

Seeds are the unit of evidence: each row's top-1 over seeds gets its mean and a 95 % Student-t
confidence interval; each row's difference from the baseline row gets Welch's unequal-variance
t-test (scipy) and the Welch-Satterthwaite interval of the difference. Ablation rows and the
baseline are trained from the same seeds but are different networks, so the samples are treated
as independent, not paired. A row with fewer than 2 seeds (or a baseline with fewer) gets no
interval and no test: it is shown, and draws no conclusion.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided significance level of the Welch test; the intervals are 1 - ALPHA
CONFIDENCE = 1 - ALPHA
PAPER_DELTA_MIN = 0.5  # points: the paper's smaller differences have no direction to agree with
TEST = "Welch's t-test"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval over ``n`` values (NaN bounds where n < 2)."""

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
