"""The adaptive-seed sampler: a real Optuna study, asked and told with a synthetic top-1.

Rows: ``clear`` is 20 points below the baseline on every seed, ``noisy`` moves by ±8 points from
seed to seed; every seed also shifts all rows alike (a shared part that pairing cancels).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from scipy import stats as sps

from van_ablate.errors import ConfigError
from van_ablate.sweep import adaptive
from van_ablate.sweep.adaptive import AdaptiveSampler, Rule, next_point, row_status

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROWS = ["baseline", "clear", "noisy"]
MEAN = {"baseline": 70.0, "clear": 50.0, "noisy": 70.0}
SPREAD = {"baseline": 0.5, "clear": 0.5, "noisy": 8.0}
SEEDS = list(range(12))
SETTINGS = dict(rows=ROWS, baseline="baseline", min_seeds=3, max_seeds=8, target=4.0)


def top1(row: str, seed: int) -> float:
    """The same number for the same (row, seed), as a deterministic training run would give."""
    shared = np.random.default_rng(seed).normal(0.0, 5.0)
    own = np.random.default_rng([seed, ROWS.index(row)]).normal(0.0, SPREAD[row])
    return float(np.clip(MEAN[row] + shared + own, 0.0, 100.0))


def objective(trial: optuna.Trial) -> float:
    return top1(*suggest(trial))


def suggest(trial: optuna.Trial) -> tuple[str, int]:
    """What the sweeper does with a trial: suggest the study's parameters."""
    return trial.suggest_categorical("+ablation", ROWS), trial.suggest_categorical("seed", SEEDS)


def drive(study: optuna.Study, sampler: AdaptiveSampler, budget: int = 100) -> None:
    """An ask-and-tell loop, as the sweeper runs one: stop asking once nothing is left."""
    for _ in range(budget):
        if sampler.is_exhausted(study):
            return
        trial = study.ask()
        tell(study, trial, objective(trial))


def tell(study: optuna.Study, trial: optuna.Trial, value: float) -> None:
    try:
        study.tell(trial, value)
    except RuntimeError as e:  # study.stop() outside optimize(): the trial is stored already
        assert "Study.stop" in str(e)


def points(study: optuna.Study) -> list[tuple[str, int]]:
    return [(t.params["+ablation"], t.params["seed"]) for t in study.trials]


def seeds_per_row(study: optuna.Study) -> dict[str, int]:
    return {row: sum(r == row for r, _ in points(study)) for row in ROWS}


def finished_study(**settings) -> tuple[optuna.Study, AdaptiveSampler]:
    sampler = AdaptiveSampler(**{**SETTINGS, **settings})
    study = optuna.create_study(sampler=sampler, direction="maximize")
    drive(study, sampler)
    return study, sampler


@pytest.fixture(scope="module")
def finished():
    return finished_study()


def test_rows_start_with_min_seeds_in_seed_order_the_baseline_first(finished):
    study, _ = finished
    assert points(study)[:9] == [(row, seed) for seed in range(3) for row in ROWS]


def test_a_noisy_row_gets_more_seeds_than_a_clear_one(finished):
    study, _ = finished
    counts = seeds_per_row(study)
    assert counts["noisy"] > counts["clear"]
    assert counts["baseline"] == max(counts["clear"], counts["noisy"])  # every Δ has its pair


def test_a_decided_row_gets_no_more_seeds(finished):
    study, sampler = finished
    clear = row_status(sampler.records(study), sampler.rule)["clear"]
    assert clear.stop == "decided" and clear.paired.high < 0
    assert clear.paired.half_width <= SETTINGS["target"]
    assert seeds_per_row(study)["clear"] == clear.n == SETTINGS["min_seeds"]


def test_no_row_gets_more_than_max_seeds(finished):
    study, sampler = finished
    assert max(seeds_per_row(study).values()) == SETTINGS["max_seeds"]
    noisy = row_status(sampler.records(study), sampler.rule)["noisy"]
    assert noisy.stop == "max seeds" and noisy.paired.half_width > SETTINGS["target"]


def test_a_finished_study_trains_every_point_once_and_is_exhausted(finished):
    study, sampler = finished
    assert len(set(points(study))) == len(study.trials)
    assert sampler.is_exhausted(study)


def test_optimize_keeps_to_its_trial_budget():
    sampler = AdaptiveSampler(**SETTINGS)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(objective, n_trials=7)
    assert len(study.trials) == 7


def test_optimize_stops_by_itself_once_every_row_has_stopped(finished):
    sampler = AdaptiveSampler(**SETTINGS)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(objective, n_trials=100)
    assert points(study) == points(finished[0])
    stops = {s.stop for s in row_status(sampler.records(study), sampler.rule).values()}
    assert None not in stops


def test_a_rerun_on_the_same_storage_continues_where_it_stopped(tmp_path, finished):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    first = optuna.create_study(
        study_name="t3", storage=storage, sampler=AdaptiveSampler(**SETTINGS)
    )
    first.optimize(objective, n_trials=10)
    sampler = AdaptiveSampler(**SETTINGS)  # a new process: nothing carried but the storage
    again = optuna.load_study(study_name="t3", storage=storage, sampler=sampler)
    drive(again, sampler)
    assert len(set(points(again))) == len(again.trials) > 10
    assert points(again) == points(finished[0])  # the same study as one uninterrupted run


def test_two_asks_with_the_first_still_running_get_different_points():
    sampler = AdaptiveSampler(**SETTINGS)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(objective, n_trials=12)  # past the first min_seeds: the widest row next
    first = study.ask()  # not suggested yet: its point is already taken
    second = study.ask()
    assert suggest(first) != suggest(second)
    third = study.ask()
    assert len({suggest(first), suggest(second), suggest(third)}) == 3


def test_a_point_asked_with_nothing_left_is_repeated_and_counted_once(finished):
    study, sampler = finished
    before = row_status(sampler.records(study), sampler.rule)
    trial = study.ask()
    assert suggest(trial) == ("baseline", 0)
    tell(study, trial, 0.0)  # a different value for a point trained already
    after = row_status(sampler.records(study), sampler.rule)
    assert after["clear"].paired == before["clear"].paired


def test_status_reads_seeds_in_order_skips_lost_pairs_and_counts_duplicates_once():
    rule = Rule(("base", "k7"), "base", min_seeds=3, target=0.1)  # too tight to stop here
    records = [("base", s, 80.0, "COMPLETE") for s in range(6)]
    records += [("k7", s, 60.0 + s, "COMPLETE") for s in (0, 1, 3, 4)]
    records += [("base", 0, 99.0, "COMPLETE"), ("k7", 2, None, "FAIL"), ("k7", 5, None, "RUNNING")]
    records += [("k7", 6, 66.0, "COMPLETE")]  # waits for seed 5: the rule reads seeds in order
    k7 = row_status(records, rule)["k7"]
    assert sorted(k7.values) == [0, 1, 3, 4] and k7.baseline[0] == 80.0
    assert (k7.seeds, k7.pending, k7.paired.delta, k7.stop) == (7, 2, -18.0, None)
    assert k7.half_width == pytest.approx(k7.paired.half_width)


def test_a_pending_pair_blocks_a_stop_until_it_is_read():
    rule = Rule(("base", "k7"), "base", min_seeds=3)
    records = [("base", s, 80.0, "COMPLETE") for s in range(3)]
    records += [("k7", 0, 60.0, "COMPLETE"), ("k7", 1, 61.0, "COMPLETE")]
    running = records + [("k7", 2, None, "RUNNING")]
    assert row_status(running, rule)["k7"].stop is None
    assert next_point(running, rule) == ("base", 3)  # still open: seed 3, the baseline's first
    done = records + [("k7", 2, 60.5, "COMPLETE")]
    assert row_status(done, rule)["k7"].stop == "decided"
    assert next_point(done, rule) is None


def test_the_next_seed_goes_to_the_widest_row_counting_its_running_seeds():
    rule = Rule(("base", "a", "b"), "base", min_seeds=3, target=2.0)
    records = [("base", s, 50.0, "COMPLETE") for s in range(9)]
    records += [("a", s, 50.0 + d, "COMPLETE") for s, d in enumerate([0.0, 3.0, -3.0])]
    records += [("b", s, 50.0 + d, "COMPLETE") for s, d in enumerate([0.0, 6.0, -6.0])]
    status = row_status(records, rule)
    assert status["b"].half_width > status["a"].half_width > rule.target
    assert next_point(records, rule) == ("b", 3)
    # b's three running seeds would bring it to 14.9 * (2.571 / 4.303) * sqrt(3 / 6) = 6.3
    running = records + [("b", s, None, "RUNNING") for s in (3, 4, 5)]
    assert row_status(running, rule)["b"].projected_half_width == pytest.approx(6.30, abs=0.01)
    assert next_point(running, rule) == ("a", 3)


def test_a_decided_row_excludes_zero_or_lies_within_the_margin_and_a_precise_one_does_neither():
    rule = Rule(("base", "same", "worse", "vague"), "base", min_seeds=4, target=3.0)
    deltas = {"same": [0.3, -0.2, 0.1, -0.3], "worse": [-1, -4, -2, -5], "vague": [-1, 2, 0, 3]}
    base = [70.0, 75.0, 65.0, 72.0]
    records = [("base", s, v, "COMPLETE") for s, v in enumerate(base)]
    records += [(r, s, b + d[s], "COMPLETE") for r, d in deltas.items() for s, b in enumerate(base)]
    status = row_status(records, rule)
    assert all(s.half_width <= rule.target for s in status.values())
    same, worse, vague = status["same"].paired, status["worse"].paired, status["vague"].paired
    assert -2.0 <= same.low < 0 < same.high <= 2.0 and status["same"].stop == "decided"
    assert worse.high < 0 and status["worse"].stop == "decided"
    assert vague.low < -0.5 and 2.0 < vague.high and status["vague"].stop == "precise"


def test_the_anytime_stop_ends_a_large_difference_before_the_width_does():
    rule = dict(rows=("base", "k3"), baseline="base", min_seeds=3, max_seeds=30, target=0.1)
    rng = np.random.default_rng(0)
    records = [("base", s, 90.0, "COMPLETE") for s in range(30)]
    records += [("k3", s, 30.0 + rng.normal(0.0, 2.0), "COMPLETE") for s in range(30)]
    anytime = row_status(records, Rule(**rule, anytime_stop=True))["k3"]
    assert anytime.stop == "decided (anytime)" and anytime.n < 30
    assert anytime.sequence.high < 0
    assert row_status(records, Rule(**rule))["k3"].stop == "max seeds"


def _false_decisions(rule: Rule, runs: int = 1000) -> float:
    """The whole rule, simulated on a row equal to the baseline (per-seed Δ normal, sd 6): the
    share of rows whose decision interval excludes 0 when the rule stops them."""
    rng, false = np.random.default_rng(0), 0
    for _ in range(runs):
        deltas = rng.normal(0.0, 6.0, rule.max_seeds)
        records = []
        while (point := next_point(records, rule)) is not None:
            row, seed = point
            records.append((row, seed, 50.0 + deltas[seed] * (row == "row"), "COMPLETE"))
        low, high = row_status(records, rule)["row"].interval
        false += not low <= 0.0 <= high
    return false / runs


NOMINAL = 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1000)  # 5 % plus Monte Carlo error


def test_stopping_on_the_running_t_width_finds_differences_that_are_not_there_too_often():
    # why two_stage exists: a row stops when its first Δs happen to agree
    rule = Rule(("base", "row"), "base", min_seeds=3, max_seeds=20, target=4.0)
    assert _false_decisions(rule) > NOMINAL


def test_the_two_stage_interval_keeps_its_95_percent_under_the_rule():
    rule = Rule(("base", "row"), "base", min_seeds=3, max_seeds=20, target=4.0, two_stage=True)
    assert _false_decisions(rule) <= NOMINAL


def test_the_two_stage_spread_comes_from_the_first_seeds_only():
    rule = Rule(("base", "row"), "base", min_seeds=3, max_seeds=10, target=2.0, two_stage=True)
    deltas = [1.0, -1.0, 0.0, 10.0, -10.0]  # sd 1 over the first three
    records = [("base", s, 50.0, "COMPLETE") for s in range(5)]
    records += [("row", s, 50.0 + d, "COMPLETE") for s, d in enumerate(deltas)]
    status = row_status(records, rule)["row"]
    # t_{0.975, 2} * 1 / sqrt(n) <= 2 from n = 5: 4.303 / sqrt(5) = 1.924
    assert status.n == 5 and status.stop == "decided"
    assert status.half_width == pytest.approx(4.302653 / math.sqrt(5), abs=1e-5)
    assert status.paired.half_width > rule.target  # the running spread would not stop it


def test_settings_are_checked_when_the_sampler_is_built():
    with pytest.raises(ConfigError, match=r"hydra.sweeper.sampler.baseline='base'"):
        AdaptiveSampler(rows=["a", "b"], baseline="base")
    with pytest.raises(ConfigError, match=r"min_seeds=1: must be an integer >= 2"):
        AdaptiveSampler(rows=["a", "b"], baseline="a", min_seeds=1)
    with pytest.raises(ConfigError, match=r"max_seeds=2: must be an integer >= 3"):
        AdaptiveSampler(rows=["a", "b"], baseline="a", min_seeds=3, max_seeds=2)


def test_the_examples_in_the_docstrings_hold():
    assert doctest.testmod(adaptive).failed == 0


def test_the_early_stop_decides_a_large_difference_at_min_seeds():
    rule = dict(rows=("base", "k3"), baseline="base", min_seeds=3, max_seeds=6, target=0.1)
    base = [90.0, 95.0, 88.0]
    row = [30.0, 41.0, 35.0]  # Δ -60, -54, -53: sd 3.8
    records = [("base", s, v, "COMPLETE") for s, v in enumerate(base)]
    records += [("k3", s, v, "COMPLETE") for s, v in enumerate(row)]
    early = row_status(records, Rule(**rule, early_stop=True))["k3"]
    assert (early.stop, early.n) == ("decided (early)", 3)
    assert row_status(records, Rule(**rule))["k3"].stop is None  # the width alone: not yet
    # the spent level by hand: K = 6 - 3 + 1 = 4 looks, alpha / 4 each, t with 2 df
    half = sps.t.ppf(1 - 0.05 / 4 / 2, 2) * np.std(np.subtract(row, base), ddof=1) / math.sqrt(3)
    assert (
        8.8 < sps.t.ppf(1 - 0.05 / 4 / 2, 2) < 9.0 and abs(np.mean(np.subtract(row, base))) > half
    )


def test_the_early_stop_keeps_false_decisions_under_five_percent():
    # a row equal to the baseline, looked at after every seed: alpha spent over the looks
    rule = Rule(("base", "row"), "base", min_seeds=3, max_seeds=10, target=0.01, early_stop=True)
    rng, early = np.random.default_rng(1), 0
    for _ in range(1000):
        deltas = rng.normal(0.0, 6.0, rule.max_seeds)
        records = []
        while (point := next_point(records, rule)) is not None:
            row, seed = point
            records.append((row, seed, 50.0 + deltas[seed] * (row == "row"), "COMPLETE"))
        early += row_status(records, rule)["row"].stop == "decided (early)"
    assert early / 1000 <= NOMINAL
