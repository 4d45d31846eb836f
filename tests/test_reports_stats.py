"""Statistics in the tables: intervals and tests against values worked out independently, and
the betting intervals' guarantees checked by simulation."""

from __future__ import annotations

import doctest
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


def _paired_by_hand(row, base):
    """Per-seed Δ: mean ± t_{0.975, n-1} s / sqrt(n), scipy's paired t and Wilcoxon p-values."""
    d = np.asarray(row, float) - np.asarray(base, float)
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    p = sps.ttest_rel(row, base).pvalue
    return d.mean(), d.mean() - half, d.mean() + half, p, sps.wilcoxon(row, base).pvalue


@pytest.mark.parametrize(
    ("row", "base"),
    [
        ([3.0, 4.0, 6.0], [1.0, 2.0, 3.0]),
        ([50.0, 52.0, 51.0, 47.5, 49.0], [60.0, 62.0, 64.0, 61.0, 58.0]),
        ([81.6, 73.5, 92.1, 66.0, 90.0, 85.2, 79.9], [80.0, 75.0, 91.0, 70.0, 88.0, 86.0, 77.0]),
    ],
)
def test_paired_comparison_matches_scipy_paired_t_and_wilcoxon(row, base):
    c = stats.paired(dict(enumerate(row)), dict(enumerate(base)))
    got = (c.delta, c.low, c.high, c.p_value, c.wilcoxon_p)
    assert got == pytest.approx(_paired_by_hand(row, base))
    assert c.n == len(row) and c.half_width == pytest.approx((c.high - c.low) / 2)


def test_paired_delta_of_two_two_three_is_significant_while_wilcoxon_cannot_be_at_three_seeds():
    # Δ = 2, 2, 3: t = 7 with df = 2, p = 0.0198; Wilcoxon's exact p for 3 positive Δs is 2/8
    c = stats.paired({0: 3.0, 1: 4.0, 2: 6.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert c.p_value == pytest.approx(0.0198, abs=1e-4) and c.significant
    assert c.wilcoxon_p == pytest.approx(0.25)


def test_paired_comparison_uses_only_the_seeds_both_rows_have():
    c = stats.paired({0: 3.0, 1: 4.0, 2: 6.0, 7: 0.0}, {0: 1.0, 1: 2.0, 2: 3.0, 3: 99.0})
    assert c.n == 3 and c.delta == pytest.approx(7 / 3)


def test_pairing_cancels_what_a_seed_adds_to_every_row():
    # each seed shifts both rows alike (+-15 points); the row is 2 points worse on every seed
    seed_effect = [15.0, -12.0, 3.0, -8.0, 10.0]
    base = {s: 70.0 + e for s, e in enumerate(seed_effect)}
    row = {s: v - 2.0 + 0.1 * (-1) ** s for s, v in base.items()}
    assert stats.paired(row, base).high < 0
    assert not stats.welch(list(row.values()), list(base.values())).significant


def test_paired_comparison_needs_two_shared_seeds():
    c = stats.paired({0: 50.0, 1: 51.0}, {0: 60.0})
    assert c.delta == -10.0 and c.n == 1
    assert math.isnan(c.low) and math.isnan(c.p_value) and math.isnan(c.wilcoxon_p)


def test_paired_deltas_without_spread_are_exact():
    same = stats.paired({0: 5.0, 1: 6.0}, {0: 5.0, 1: 6.0})
    assert (same.delta, same.low, same.high, same.p_value, same.wilcoxon_p) == (0, 0, 0, 1, 1)
    shifted = stats.paired({0: 7.0, 1: 8.0, 2: 9.0}, {0: 5.0, 1: 6.0, 2: 7.0})
    assert (shifted.low, shifted.high) == (2.0, 2.0) and shifted.significant


def _beta_runs(n, experiments, a=8.0, b=2.0, seed=0):
    """Top-1 in percent: ``experiments`` rows of ``n`` Beta(a, b) draws, scaled to [0, 100]."""
    return 100 * np.random.default_rng(seed).beta(a, b, size=(experiments, n)), 100 * a / (a + b)


@pytest.mark.parametrize("n", [5, 10, 20])
def test_betting_interval_covers_the_mean_of_bounded_draws_at_least_95_percent(n):
    runs, mean = _beta_runs(n, 2000, seed=n)
    intervals = [stats.betting_ci(x, 0.0, 100.0) for x in runs]
    coverage = np.mean([i.low <= mean <= i.high for i in intervals])
    assert coverage >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / len(runs))  # Monte Carlo error
    assert all(0.0 <= i.low <= i.mean <= i.high <= 100.0 for i in intervals)


def test_betting_interval_never_leaves_the_range_where_the_t_interval_does():
    baseline = [95.0, 97.2, 66.0]  # our proxy's bimodal baseline: t gives [42.8, 129.3]
    assert stats.mean_ci(baseline).high > 100
    i = stats.betting_ci(baseline, 0.0, 100.0)
    assert 0.0 <= i.low < i.mean < i.high <= 100.0
    for edge in ([100.0] * 6, [0.0] * 6):
        i = stats.betting_ci(edge, 0.0, 100.0)
        assert 0.0 <= i.low <= i.mean <= i.high <= 100.0
        assert i.low <= edge[0] <= i.high


def test_betting_interval_narrows_as_seeds_are_added():
    widths = []
    for n in (5, 10, 20):
        runs, _ = _beta_runs(n, 200, seed=100 + n)
        intervals = [stats.betting_ci(x, 0.0, 100.0) for x in runs]
        widths.append(np.mean([i.high - i.low for i in intervals]))
    assert widths[0] > widths[1] > widths[2]


def test_values_outside_the_range_are_refused():
    with pytest.raises(ValueError, match=r"values must lie in \[0.0, 100.0\]"):
        stats.betting_ci([50.0, 101.0], 0.0, 100.0)


def _null_deltas(sequences=2000, n=30, sd=10.0, seed=0):
    """Per-seed Δ with no true difference: symmetric noise, clipped to the [-100, 100] range."""
    return np.clip(np.random.default_rng(seed).normal(0.0, sd, (sequences, n)), -100.0, 100.0)


LOOKS = range(2, 31)  # a look after every seed from the second to the 30th


def test_confidence_sequence_without_a_difference_rarely_ever_excludes_zero():
    deltas = _null_deltas()
    ever = [
        any(not (i.low <= 0.0 <= i.high) for i in stats.betting_cs(d, -100.0, 100.0)[1:])
        for d in deltas
    ]
    assert np.mean(ever) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / len(deltas))


def test_a_paired_t_test_checked_after_every_seed_finds_a_difference_too_often():
    # the reason for the confidence sequence: optional stopping on p < 0.05 inflates errors
    deltas = _null_deltas()
    ever = np.zeros(len(deltas), dtype=bool)
    for n in LOOKS:
        d = deltas[:, :n]
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
        ever |= 2 * sps.t.sf(np.abs(t), n - 1) < 0.05
    assert np.mean(ever) > 0.05 + 3 * math.sqrt(0.05 * 0.95 / len(deltas))


def test_confidence_sequence_is_nested_stays_in_range_and_finds_a_large_difference():
    d = np.clip(np.random.default_rng(1).normal(-40.0, 5.0, 30), -100.0, 100.0)
    cs = stats.betting_cs(d, -100.0, 100.0)
    assert [i.n for i in cs] == list(range(1, 31))
    assert all(-100.0 <= i.low <= i.high <= 100.0 for i in cs)
    assert all(b.low >= a.low and b.high <= a.high for a, b in zip(cs[:-1], cs[1:], strict=True))
    assert cs[-1].high < 0 and cs[-1].low <= -40.0


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


def test_table_rows_carry_the_bounded_interval_the_paired_test_and_welch_beside(table3):
    no_dw = table3.loc["w/o DW-Conv"]
    bounded = stats.betting_ci(RUNS["no_dw_conv"], 0.0, 100.0)
    assert (no_dw["top1_ci_low"], no_dw["top1_ci_high"]) == pytest.approx((bounded.low, 100.0))
    assert 0.0 <= no_dw["top1_ci_low"] < min(RUNS["no_dw_conv"])
    # the paired test against scipy's, over the three seeds both rows have
    deltas = np.subtract(RUNS["no_dw_conv"], RUNS["baseline"])
    ref = sps.ttest_rel(RUNS["no_dw_conv"], RUNS["baseline"])
    half = sps.t.ppf(0.975, 2) * deltas.std(ddof=1) / math.sqrt(3)
    got = no_dw[["delta_baseline", "delta_ci_low", "delta_ci_high", "p_value"]].to_list()
    assert got == pytest.approx(
        [deltas.mean(), deltas.mean() - half, deltas.mean() + half, ref.pvalue]
    )
    assert no_dw["n_pairs"] == 3 and no_dw["significant"] is False and no_dw["decided"] == "open"
    _, wlo, whi, wp = _welch_by_hand(RUNS["no_dw_conv"], RUNS["baseline"])
    assert no_dw[["welch_ci_low", "welch_ci_high", "welch_p"]].to_list() == pytest.approx(
        [wlo, whi, wp]
    )


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
    # its one seed against the baseline's seed 0 (70 - 80), no interval from one pair
    assert shown["Δ base ours [95% CI]"] == f"-10.00 {render.NO_CONCLUSION}"
    assert shown["Agrees with paper"] != "no"  # no direction drawn from one seed either way


def test_summary_counts_rows_that_differ_and_those_in_the_papers_direction(table3):
    # tested: k7 (not a Table 3 row), no_dw_conv, dense_conv; sigmoid has one seed
    (line,) = summary(table3.reset_index())
    assert "1 of 2 rows decided (paired t-test over shared seeds, 95 %)" in line
    assert "1 differ from the baseline, 0 lie within ±2 points of it" in line
    assert "1 of those that differ in the paper's direction" in line
    assert "1 rows with fewer than 2 shared seeds draw no conclusion" in line
    assert line in render.to_markdown(table3.reset_index(), "table3")


def test_rows_carry_their_measured_training_speed(table3):
    # the fabricated runs log 400 images/s every epoch
    assert table3.loc["VAN-B0", "images_per_sec"] == pytest.approx(400.0)
    shown = render.display_frame(table3.reset_index()).set_index("Row")
    assert shown.loc["VAN-B0", "Train img/s ours"] == "400"


def test_the_examples_in_the_docstrings_hold():
    assert doctest.testmod(stats).failed == 0
