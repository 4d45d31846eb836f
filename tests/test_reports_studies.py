"""One clean table per study: a study's runs fill only the tables it compares, pooled with no
other study's, and the runs no table shows (a search's trials) are listed by study."""

from __future__ import annotations

import pandas as pd
import pytest
from report_inputs import make_results, write_run

from van_ablate import paper
from van_ablate.analysis import render, report
from van_ablate.analysis.collect import load_runs
from van_ablate.analysis.tables import build_table, runs_in_no_table
from van_ablate.model.lka import LKASpec

TABLE3 = [r.ablation for r in paper.TABLE3]
# nas trials: (dims, kernel size); one at the default widths and LKA, one pruned
NAS = [
    ((16, 16, 96, 128), 7),
    ((8, 32, 32, 96), 14),
    ((8, 48, 64, 128), 21),
    (None, 21),
    ((24, 16, 32, 128), 28),
]


def _study(root, name: str, runs: list[dict]) -> None:
    for number, r in enumerate(runs):
        r["trial"] = {"study_name": name, "number": number}
        write_run(root / name, r)


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """The table3, nas and layer_scale studies as the sweeper leaves them in ``multirun/``."""
    root = tmp_path_factory.mktemp("multirun")
    table3 = [
        make_results(f"t3-{a}-s{s}", ablation=a, seed=s, top1=70.0 + i + s)
        for i, a in enumerate(TABLE3)
        for s in (0, 1)
    ]
    _study(root, "table3_van_proxy", table3)
    nas = [
        make_results(f"nas{i}", lka=LKASpec(kernel_size=k), dims=dims, top1=60.0 + i)
        for i, (dims, k) in enumerate(NAS)
    ]
    nas.append(make_results("nas-pruned", lka=LKASpec(kernel_size=14), dims=(8, 8, 8, 8)))
    nas[-1]["status"] = "pruned"
    _study(root, "nas_van_proxy", nas)
    layer_scale = [
        make_results(f"ls-{a}-s{s}", ablation=a, seed=s, top1=80.0 - 2 * i + s)
        for i, a in enumerate(["baseline", "no_layer_scale"])
        for s in (0, 1)
    ]
    _study(root, "layer_scale_van_proxy", layer_scale)
    return root


@pytest.fixture(scope="module")
def all_report(multirun, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    argv = ["all", str(multirun), "--out", str(out), "--format", "md,csv,html", "--no-svg"]
    assert report.main(argv) == 0
    return out


def test_table3_holds_the_papers_8_rows_of_the_table3_study_only(all_report):
    table = pd.read_csv(all_report / "table3.csv")
    assert list(table["row"]) == [r.label for r in paper.TABLE3]
    assert set(table["study"]) == {"table3_van_proxy"}
    assert (table["n_runs"] == 2).all()  # its own 2 seeds, no other study's baseline pooled in
    assert table.set_index("row").loc["VAN-B0", "top1_mean"] == pytest.approx(70.0 + 7 + 0.5)
    md = (all_report / "table3.md").read_text()
    assert "missing" not in md.split("\n\n")[1]  # the table itself: no all-missing group


def test_the_layer_scale_table_holds_the_layer_scale_study_beside_the_papers_models(all_report):
    table = pd.read_csv(all_report / "layer_scale.csv")
    ours = table[table["model"] == "van_proxy"]
    assert list(ours["row"]) == ["van_proxy w/ LayerScale", "van_proxy w/o LayerScale"]
    assert set(ours["study"]) == {"layer_scale_van_proxy"}
    assert list(ours["top1_mean"]) == [80.5, 78.5]
    assert len(table) == 2 * len(paper.LAYER_SCALE_TABLE) + 2


def test_a_table_no_study_compares_is_its_rows_once_all_missing(all_report):
    # nas trials each have their own widths: none fills two kernel-size rows of one group
    table = pd.read_csv(all_report / "kernel.csv")
    assert list(table["row"]) == ["K=7", "K=14", "K=21", "K=28"]
    assert table["missing"].all()


def test_the_search_studys_runs_are_listed_in_their_own_section(all_report):
    others = pd.read_csv(all_report / "other_runs.csv")
    assert set(others["study_name"]) == {"nas_van_proxy"}
    assert sorted(others["trial_number"]) == list(range(len(NAS) + 1))
    md = (all_report / "other_runs.md").read_text()
    assert md.startswith(f"### Runs in no table: study nas_van_proxy ({len(NAS) + 1})")
    assert "pruned" in md and "K7 d2" in md
    page = (all_report / "all.html").read_text()
    assert "Runs in no table: study nas_van_proxy" in page


def test_a_study_of_one_table_is_not_listed_in_a_report_of_another(multirun, tmp_path):
    argv = ["table3", str(multirun), "--out", str(tmp_path), "--format", "csv", "--no-svg"]
    assert report.main(argv) == 0
    others = pd.read_csv(tmp_path / "other_runs.csv")
    assert set(others["study_name"]) == {"nas_van_proxy", "layer_scale_van_proxy"}


def test_two_kernel_size_studies_are_two_groups_and_a_grids_other_points_are_listed(tmp_path):
    _study(
        tmp_path,
        "kernel_size_van_proxy",
        [make_results(f"k{k}-s{s}", lka=LKASpec(kernel_size=k), seed=s) for k in (7, 14, 21, 28)
         for s in (0, 1)],
    )  # fmt: skip
    _study(
        tmp_path,
        "kernel_size_grid_van_proxy",
        [make_results(f"g{k}-{d}", lka=LKASpec(kernel_size=k, dilation=d), top1=40.0)
         for k in (7, 14, 21, 28) for d in (1, 2, 3, 4)],
    )  # fmt: skip
    runs = load_runs([tmp_path]).runs
    table = build_table("kernel", runs)
    assert (
        list(table["study"]) == ["kernel_size_grid_van_proxy"] * 4 + ["kernel_size_van_proxy"] * 4
    )
    assert list(table["n_runs"]) == [1] * 4 + [2] * 4
    grid = runs_in_no_table(["kernel"], runs)
    assert len(grid) == 16 - 4 and set(grid["study_name"]) == {"kernel_size_grid_van_proxy"}


def test_runs_outside_any_study_are_one_group_named_runs(tmp_path):
    for a in ("baseline", "k7"):
        write_run(tmp_path / "runs", make_results(a, ablation=a))
    write_run(tmp_path / "study", make_results("t0", ablation="k7", trial=("kernel_size", 0)))
    table = build_table("kernel", load_runs([tmp_path]).runs)
    assert set(table["study"]) == {""} and table["n_runs"].sum() == 2
    md = render.to_markdown(table, "kernel")
    assert "| runs " in md and "kernel_size" not in md


SAMPLER = """hydra:
  sweeper:
    sampler:
      _target_: van_ablate.sweep.adaptive.AdaptiveSampler
      row_param: +ablation
      baseline: baseline
      min_seeds: 3
      max_seeds: 6
      target: 2.0
      early_stop: true
"""
# best top-1 per seed of an adaptive table3 study; the other rows are missing
ADAPTIVE = {
    "baseline": [90.0, 92.0, 91.0, 90.0, 93.0, 91.0],
    "no_attention": [30.0, 31.0, 29.0],  # Δ about -61 on 3 seeds: decided early
    "no_dw_conv": [90.5, 91.5, 91.2],  # Δ 0.5, -0.5, 0.2: interval within ±2 at 3 seeds
    "sigmoid": [80.0, 95.0, 86.0],  # wide after 3 seeds: the study's trials ran out
    "dense_conv": [99.0, 85.0, 95.0, 80.0, 99.0, 88.0],  # still wide at 6 seeds
}


def test_an_adaptive_studys_rows_say_why_they_stopped(tmp_path):
    runs = [
        make_results(f"{a}-s{s}", ablation=a, seed=s, top1=v)
        for a, values in ADAPTIVE.items()
        for s, v in enumerate(values)
    ]
    _study(tmp_path, "table3_van_proxy_builtin_v3", runs)
    (tmp_path / "table3_van_proxy_builtin_v3" / "multirun.yaml").write_text(SAMPLER)
    running = build_table("table3", load_runs([tmp_path]).runs).set_index("ablation")
    assert running.loc["sigmoid", "stop"] == "open"  # no sweep process has ended yet
    (tmp_path / "table3_van_proxy_builtin_v3" / "optimization_results.yaml").write_text("{}\n")
    table = build_table("table3", load_runs([tmp_path]).runs).set_index("ablation")
    assert table.loc["no_attention", "stop"] == "decided (early)"
    assert table.loc["no_dw_conv", "stop"] == "decided"
    assert table.loc["no_dw_conv", "decided"] == "within ±2"
    assert table.loc["sigmoid", "stop"] == "budget"
    assert table.loc["dense_conv", "stop"] == "max seeds"
    assert table.loc["dense_conv", "n_seeds"] == 6 and table.loc["sigmoid", "n_seeds"] == 3
    shown = render.display_frame(table.reset_index()).set_index("Row")
    assert shown.loc["w/o Attention", "Stopped"] == "decided (early)"


def test_a_grid_studys_rows_have_no_stop_reason(multirun):
    table = build_table("table3", load_runs([multirun]).runs)
    assert table["stop"].isna().all()
