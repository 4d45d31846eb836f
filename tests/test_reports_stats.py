"""Statistics in the tables: intervals and Welch's test against values worked out independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from report_inputs import make_results, write_run
from scipy import stats as sps

from van_ablate.analysis import render, stats
from van_ablate.analysis.collect import load_runs
from van_ablate.analysis.tables import build_table, summary


def _t_interval(x):
    """The textbook interval: mean ± t_{0.975, n-1} s / sqrt(n)."""
    x = np.asarray(x, float)
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def _welch_by_hand(a, b):
    """Welch's t, its Satterthwaite degrees of freedom, two-sided p and the 95% interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    d = a.mean() - b.mean()
    p = 2 * sps.t.sf(abs(d / se), df)
    half = sps.t.ppf(0.975, df) * se
    return d, d - half, d + half, p


def test_mean_interval_of_one_two_three_is_two_plus_minus_t_times_standard_error():
    # s = 1, n = 3: half-width t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    i = stats.mean_ci([1.0, 2.0, 3.0])
    assert (i.mean, i.n) == (2.0, 3)
    assert (i.low, i.high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)


@pytest.mark.parametrize("x", [[60.0, 62.0], [81.6, 73.5, 92.1], [10.0, 10.5, 11.0, 30.0]])
def test_mean_interval_matches_the_textbook_formula(x):
    i = stats.mean_ci(x)
    assert (i.low, i.high) == pytest.approx(_t_interval(x))


def test_one_seed_has_a_mean_but_no_interval():
    i = stats.mean_ci([55.0])
    assert i.mean == 55.0 and i.n == 1
    assert math.isnan(i.low) and math.isnan(i.high)


@pytest.mark.parametrize(
    ("row", "base"),
    [
        ([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]),
        ([50.0, 52.0, 51.0], [60.0, 62.0, 64.0, 61.0]),
        ([70.0, 90.0], [71.0, 72.0, 73.0]),
    ],
)
def test_welch_matches_the_satterthwaite_formula(row, base):
    c = stats.welch(row, base)
    assert (c.delta, c.low, c.high, c.p_value) == pytest.approx(_welch_by_hand(row, base))


def test_welch_of_three_four_five_against_one_two_three_is_not_significant_at_five_percent():
    # t = 2 / sqrt(2/3) = 2.449, df = 4: two-sided p = 0.0705
    c = stats.welch([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    assert c.p_value == pytest.approx(0.0705, abs=1e-4)
    assert not c.significant


def test_welch_needs_two_values_on_each_side():
    c = stats.welch([50.0], [60.0, 62.0])
    assert c.delta == -11.0
    assert math.isnan(c.p_value) and math.isnan(c.low) and not c.significant


def test_samples_without_spread_differ_surely_when_their_means_differ():
    assert stats.welch([5.0, 5.0], [4.0, 4.0]).significant
    assert not stats.welch([5.0, 5.0], [5.0, 5.0]).significant


def test_direction_is_asked_only_where_the_paper_moved_half_a_point():
    assert stats.agrees(-2.0, -1.1) is True
    assert stats.agrees(+2.0, -1.1) is False
    assert stats.agrees(-2.0, -0.4) is None
    assert stats.agrees(math.nan, -3.0) is None


# ablation -> best top-1 per seed: k7 clearly below, no_dw_conv within noise, one seed of sigmoid
RUNS = {
    "baseline": [80.0, 82.0, 81.0],
    "k7": [60.0, 61.0, 59.5],
    "no_dw_conv": [79.0, 83.0, 80.5],
    "dense_conv": [86.0, 87.0, 86.5],
    "sigmoid": [70.0],
}


@pytest.fixture(scope="module")
def table3(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for ablation, values in RUNS.items():
        for seed, top1 in enumerate(values):
            write_run(
                root, make_results(f"{ablation}-s{seed}", ablation=ablation, seed=seed, top1=top1)
            )
    return build_table("table3", load_runs([root]).runs).set_index("row")


def test_table_rows_carry_the_interval_and_welch_test_against_the_baseline(table3):
    no_dw = table3.loc["w/o DW-Conv"]
    lo, hi = _t_interval(RUNS["no_dw_conv"])
    assert (no_dw["top1_ci_low"], no_dw["top1_ci_high"]) == pytest.approx((lo, hi))
    d, dlo, dhi, p = _welch_by_hand(RUNS["no_dw_conv"], RUNS["baseline"])
    got = no_dw[["delta_baseline", "delta_ci_low", "delta_ci_high", "p_value"]].to_list()
    assert got == pytest.approx([d, dlo, dhi, p])
    assert no_dw["significant"] is False


def test_significant_rows_are_marked_and_checked_against_the_papers_direction(table3):
    # the paper: K=21 -> w/ (21x21 Conv) gains, removing DW-D-Conv or shrinking K loses
    dense = table3.loc["w/ (21x21 Conv)"]
    assert bool(dense["significant"]) and dense["paper_delta_baseline"] > 0.5
    assert dense["agrees_paper"] is True
    shown = render.display_frame(table3.reset_index()).set_index("Row")
    assert shown.loc["w/ (21x21 Conv)", "Δ base ours [95% CI]"].endswith(render.SIGNIFICANT)
    assert not shown.loc["w/o DW-Conv", "Δ base ours [95% CI]"].endswith(render.SIGNIFICANT)
    assert shown.loc["w/ (21x21 Conv)", "Agrees with paper"] == "yes"


def test_a_row_with_one_seed_is_shown_and_draws_no_conclusion(table3):
    sig = table3.loc["w/ Sigmoid"]
    assert sig["top1_mean"] == 70.0 and sig["n_seeds"] == 1
    assert math.isnan(sig["p_value"]) and sig["significant"] is None
    shown = render.display_frame(table3.reset_index()).set_index("Row").loc["w/ Sigmoid"]
    assert shown["95% CI ours"] == render.NO_CONCLUSION
    assert shown["Δ base ours [95% CI]"] == f"-11.00 {render.NO_CONCLUSION}"
    assert shown["Agrees with paper"] != "no"  # no direction drawn from one seed either way


def test_summary_counts_rows_that_differ_and_those_in_the_papers_direction(table3):
    # tested: k7 (not a Table 3 row), no_dw_conv, dense_conv; sigmoid has one seed
    (line,) = summary(table3.reset_index())
    assert "1 of 2 rows differ from the baseline (Welch's t-test, p < 0.05)" in line
    assert "1 of them in the paper's direction" in line
    assert "1 rows with fewer than 2 seeds draw no conclusion" in line
    assert line in render.to_markdown(table3.reset_index(), "table3")


def test_rows_carry_their_measured_training_speed(table3):
    # the fabricated runs log 400 images/s every epoch
    assert table3.loc["VAN-B0", "images_per_sec"] == pytest.approx(400.0)
    shown = render.display_frame(table3.reset_index()).set_index("Row")
    assert shown.loc["VAN-B0", "Train img/s ours"] == "400"
