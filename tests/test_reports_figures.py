"""Readable figures: ablation names and colours, chance line, full scale, thin-study warnings."""

from __future__ import annotations

import logging

import pytest
from report_inputs import make_results, make_study, write_run

from van_ablate.analysis import figures, report
from van_ablate.analysis.collect import load_runs
from van_ablate.analysis.studies import load_study, trials_frame

ABLATIONS = ["baseline", "k7", "no_dw_conv", "no_dwd_conv"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two seeds per ablation, each run a trial of the study ``t3`` (as the sweeper links them)."""
    root = tmp_path_factory.mktemp("fig")
    runs = []
    for i, ablation in enumerate(ABLATIONS):
        for seed in (0, 1):
            trial = ("t3", len(runs))
            r = make_results(
                f"{ablation}-s{seed}", ablation=ablation, seed=seed, top1=40.0 + 5 * i, trial=trial
            )
            write_run(root / "runs", r)
            runs.append(r)
    storage = f"sqlite:///{root / 'study.db'}"
    make_study(storage, "t3", runs, results_root=root / "runs")
    data = load_runs([root / "runs"])
    data.trials = trials_frame(load_study(storage))
    return root, storage, data


def test_pareto_points_are_named_by_their_ablation_not_their_trial_number(inputs):
    _, _, data = inputs
    points = report.pareto_points(data)
    assert sorted(set(points["label"])) == sorted(ABLATIONS)
    front = report.pareto_front(data)
    assert set(front["label"]) <= set(ABLATIONS)


def test_each_ablation_has_its_own_colour():
    assert len({figures.ABLATION_COLOURS[p] for p in figures.ABLATION_COLOURS}) == len(
        figures.ABLATION_COLOURS
    )
    assert figures.colour("van_proxy k7") == figures.ABLATION_COLOURS["k7"]


def _chance_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_label().startswith("chance")]


def test_speed_figure_puts_top1_on_the_full_scale_with_the_chance_line(inputs):
    _, _, data = inputs
    fig = figures.top1_vs_speed(data.runs)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 100.0)
    (line,) = _chance_lines(ax)  # the runs are on the built-in data's 4 classes
    assert line.get_ydata()[0] == pytest.approx(25.0)
    assert {t.get_text() for t in ax.texts} == set(ABLATIONS)
    assert "measured training images/s" in ax.get_xlabel()


def test_runs_that_set_the_lka_without_an_ablation_are_one_point_per_lka(tmp_path):
    # as a kernel_size study leaves them: lka.kernel_size=K, no +ablation
    for ablation in ("k7", "k14", "baseline"):
        for seed in (0, 1):
            r = make_results(f"{ablation}-s{seed}", ablation=ablation, seed=seed, top1=50.0 + seed)
            r["ablations"] = []
            write_run(tmp_path, r)
    runs = load_runs([tmp_path]).runs
    speed = figures.top1_vs_speed(runs).axes[0]
    assert {t.get_text() for t in speed.texts} == {"K7 d2", "K14 d3", "K21 d3"}
    curves = figures.curves(runs, load_runs([tmp_path]).epochs).axes[0]
    assert {ln.get_label().split(" (")[0] for ln in curves.get_lines()} >= {
        "van_proxy K7 d2",
        "van_proxy K14 d3",
        "van_proxy K21 d3",
    }


def test_kernel_figure_shows_ours_and_the_papers_on_one_scale_with_chance(inputs):
    _, _, data = inputs
    fig = figures.top1_vs_kernel(data.runs)
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 100.0) and len(_chance_lines(ax)) == 1
    assert any("paper" in ln.get_label() for ln in ax.get_lines())


def test_a_front_and_importances_from_fewer_trials_than_startup_carry_a_warning(
    inputs, tmp_path, caplog
):
    root, storage, _ = inputs
    argv = ["pareto", "--storage", storage, "--no-svg", "--format", "md,csv"]
    with caplog.at_level(logging.WARNING, logger="analysis"):
        assert report.main([*argv, "--out", str(tmp_path / "few"), "--startup-trials", "20"]) == 0
    assert "fewer than the sampler's 20 startup trials" in caplog.text
    md = (tmp_path / "few" / "pareto_front.md").read_text()
    assert "Warning: front from 8 complete trials, fewer than the sampler's 20" in md
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="analysis"):
        assert report.main([*argv, "--out", str(tmp_path / "enough"), "--startup-trials", "8"]) == 0
    assert "startup" not in caplog.text
    assert "Warning" not in (tmp_path / "enough" / "pareto_front.md").read_text()


def test_startup_count_is_read_from_the_sweeps_multirun_yaml(tmp_path):
    journal = tmp_path / "optuna_journal.log"
    assert report.startup_trials(str(journal)) == report.STARTUP_TRIALS
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    sampler:\n      name: nsgaii\n      population_size: 8\n"
    )
    assert report.startup_trials(str(journal)) == 8


def test_startup_trials_below_one_is_one_line_and_exit_2(inputs, capsys):
    _, storage, _ = inputs
    assert report.main(["pareto", "--storage", storage, "--startup-trials", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--startup-trials" in err
