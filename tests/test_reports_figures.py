"""Readable figures: ablation names and colours, chance line, full scale, thin-study warnings."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
from report_inputs import make_results, make_study, write_run

from van_ablate.analysis import figures, report
from van_ablate.analysis.collect import load_runs
from van_ablate.analysis.stats import Interval
from van_ablate.analysis.studies import load_study, trials_frame
from van_ablate.model.lka import LKASpec

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


@pytest.fixture(scope="module")
def forty_runs(tmp_path_factory):
    """40 runs as the proxy studies leave them, crowded where theirs are: a grid of 25 LKAs
    (one seed each) and 5 ablations x 3 seeds, between 180 and 260 images/s and 75-100 %."""
    root = tmp_path_factory.mktemp("forty")
    rng = np.random.default_rng(0)
    runs = [
        make_results(f"K{k}d{d}", lka=LKASpec(kernel_size=k, dilation=d))
        for k in (7, 14, 21, 28, 35)
        for d in (1, 2, 3, 4, 5)
    ]
    runs += [
        make_results(f"{a}-s{s}", ablation=a, seed=s)
        for a in ("baseline", "no_dw_conv", "no_dwd_conv", "attention_add", "dense_conv")
        for s in (0, 1, 2)
    ]
    for r in runs:
        speed, top1 = rng.uniform(180, 260), rng.uniform(75, 100)
        for e in r["epochs"]:
            e["images_per_sec"] = speed
        r["best"]["val_top1"] = top1
        write_run(root, r)
    return load_runs([root]).runs


def _drawn_texts(fig):
    """Every text the figure draws: titles, axis labels, tick labels in view, point labels,
    legend entries."""
    texts = []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, view in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            locs = axis.get_majorticklocs()
            labels = axis.get_majorticklabels()
            texts += [t for t, x in zip(labels, locs, strict=True) if min(view) <= x <= max(view)]
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    for legend in legends:
        texts += [legend.get_title(), *legend.get_texts()]
    return [t for t in texts if t.get_visible() and t.get_text()], legends


def test_speed_figure_of_40_runs_has_no_overlapping_or_cut_text(forty_runs):
    fig = figures.top1_vs_speed(forty_runs)
    fig.canvas.draw()  # as saving does: the layout, then every text where it is drawn
    renderer = fig.canvas.get_renderer()
    texts, legends = _drawn_texts(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    inside = fig.bbox
    for name, box in boxes + [("legend", g.get_window_extent(renderer)) for g in legends]:
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, f"{name!r} cut at a side"
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, f"{name!r} cut at the top or bottom"
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert len(labels) >= 10  # the crowd still has names, not just colours
    legend_entries = sum(len(g.get_texts()) for g in legends)
    assert legend_entries == 25 + 5 + 1  # every point, and the chance line


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


def test_error_bars_take_the_intervals_own_bounds_not_a_symmetric_half_width():
    # a bounded interval (one that keeps to 0-100 %) is not symmetric about the mean
    lopsided, one_seed = Interval(98.0, 95.0, 99.5, 3), Interval(60.0, math.nan, math.nan, 1)
    assert figures._bars([lopsided, one_seed]) == [[3.0, 0.0], [1.5, 0.0]]
