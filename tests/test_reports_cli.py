"""Report commands: every file written, the HTML page self-contained, bad input, W&B both ways."""

from __future__ import annotations

import base64
import json
import logging
import re
import runpy

import optuna
import pandas as pd
import pytest
from conftest import REPO
from report_inputs import make_results, make_study, non_dominated, write_run
from wandb_records import finished_records

from van_ablate.analysis import report
from van_ablate.analysis.collect import load_runs, run_row
from van_ablate.analysis.studies import load_study, trials_frame
from van_ablate.analysis.tables import build_table
from van_ablate.analysis.wandb_io import collect_wandb, results_from_wandb, upload_report

ABLATIONS = ["baseline", "k7", "k14", "k28", "no_dw_conv", "sigmoid", "no_layer_scale"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    runs = []
    for i, ablation in enumerate(ABLATIONS):
        for seed in (0, 1):
            r = make_results(
                f"{ablation}-s{seed}", ablation=ablation, seed=seed, top1=50.0 + i + seed
            )
            write_run(root / "runs", r)
            runs.append(r)
    (root / "runs" / "torn").mkdir()
    (root / "runs" / "torn" / "results.json").write_text("{")
    storage = f"sqlite:///{root / 'study.db'}"
    make_study(storage, "nas", runs, results_root=root / "runs")
    return root, storage


@pytest.fixture(scope="module")
def full_report(inputs, tmp_path_factory):
    root, storage = inputs
    out = tmp_path_factory.mktemp("report")
    code = report.main(["all", str(root / "runs"), "--storage", storage, "--out", str(out)])
    assert code == 0
    return out


def test_report_all_writes_every_table_format_and_figure_non_empty(full_report):
    for table in ("table3", "kernel", "layer_scale"):
        for fmt in ("md", "tex", "csv"):
            assert (full_report / f"{table}.{fmt}").stat().st_size > 0
    for fig in report.FIGURES:
        for fmt in ("png", "svg"):
            assert (full_report / "figures" / f"{fig}.{fmt}").stat().st_size > 1000, fig
    assert (full_report / "figures" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((full_report / "trials.csv").read_text().splitlines()) == 1 + 2 * len(ABLATIONS)


def test_pareto_front_is_exactly_the_non_dominated_trials(full_report):
    front = pd.read_csv(full_report / "pareto_front.csv")
    trials = pd.read_csv(full_report / "trials.csv")
    complete = trials[(trials["state"] == "COMPLETE") & trials["feasible"]]
    points = list(zip(complete["complexity.macs"], complete["best.val_top1"], strict=True))
    want = non_dominated(points)
    assert 1 < len(want) < len(set(points))  # the inputs give a front that leaves trials out
    listed = list(zip(front["complexity.macs"], front["best.val_top1"], strict=True))
    assert set(listed) == want and len(listed) == len(want)  # each front point listed once
    assert front["complexity.macs"].is_monotonic_increasing
    assert front["best.val_top1"].is_monotonic_increasing  # more MACs only for more top-1


def test_html_page_is_self_contained_with_every_figure_inlined(full_report):
    page = (full_report / "all.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(report.FIGURES)
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "Table 3: LKA components" in page and "missing" in page


def test_html_page_names_the_skipped_file(full_report):
    page = (full_report / "all.html").read_text()
    assert "Skipped files" in page and "torn/results.json" in page


def test_single_table_report_writes_only_what_is_asked(inputs, tmp_path):
    root, _ = inputs
    argv = ["kernel", str(root / "runs"), "--format", "md,csv", "--no-svg", "--out", str(tmp_path)]
    assert report.main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["kernel.csv", "kernel.md"]
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == ["curves.png", "kernel_size.png"]


def test_pareto_points_of_a_study_use_its_objectives(inputs):
    root, storage = inputs
    data = load_runs([root / "runs"])
    data.trials = trials_frame(load_study(storage, "nas"))
    points = report.pareto_points(data)
    assert len(points) == 2 * len(ABLATIONS)
    assert points["top1"].max() == 50.0 + len(ABLATIONS) - 1 + 1
    assert (points["macs"] > 1e6).all()


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["table3", "no/such/dir"], "runs='no/such/dir'"),
        (["pareto", "--storage", "missing.log"], "storage='missing.log'"),
        (["table3"], "runs=''"),
        (["table3", ".", "--metric", "top5"], "--metric='top5'"),
        (["table3", ".", "--format", "md,pdf"], "--format='pdf'"),
        (["table3", ".", "--study", "nas"], "--study='nas'"),
    ],
)
def test_bad_input_prints_one_line_naming_the_key_and_exits_2(argv, key, capsys, tmp_path):
    code = report.main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and key in err[0]


def test_a_study_not_in_the_storage_is_one_line_and_exit_2(inputs, capsys, tmp_path):
    _, storage = inputs
    code = report.main(["pareto", "--storage", storage, "--study", "other", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "study='other'" in err and "nas" in err


def test_wandb_upload_offline_writes_tables_and_images(full_report, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tables = {"table3": pd.read_csv(full_report / "table3.csv")}
    figures = [full_report / "figures" / "pareto.png"]
    run_dir = upload_report(
        tables, figures, project="p", group="nas", name="r", mode="offline", out_dir=tmp_path
    )
    media = run_dir / "files" / "media"
    assert list((media / "table").glob("table3_*.table.json"))
    assert list((media / "images" / "figures").glob("pareto_*.png"))
    assert list(run_dir.glob("*.wandb"))


def test_report_command_without_a_key_reads_local_runs_and_writes_its_wandb_run_offline(
    inputs, tmp_path, monkeypatch, caplog, capsys
):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: no key
    root, storage = inputs
    out = tmp_path / "out"
    argv = ["table3", str(root / "runs"), "--storage", storage, "--out", str(out)]
    argv += ["--wandb-runs", "me/van-ablate", "--wandb-project", "van-ablate", "--no-svg"]
    with caplog.at_level(logging.WARNING, logger="analysis"):
        assert report.main(argv) == 0
    warnings = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert warnings == [
        "skipped W&B project me/van-ablate: no API key (set WANDB_API_KEY or wandb login)"
    ]
    table3 = pd.read_csv(out / "table3.csv")
    assert table3["top1_mean"].notna().any()  # the local runs are still in the report
    [offline] = (out / "wandb").glob("offline-run-*")
    assert (
        f"W&B is offline; upload the report with: wandb sync {offline}" in capsys.readouterr().out
    )
    [run] = finished_records(out / "wandb", 1).values()
    [meta] = [r.run for r in run if r.WhichOneof("record_type") == "run"]
    assert (meta.project, meta.run_group, meta.job_type) == ("van-ablate", "nas", "report")
    assert meta.display_name == "report-table3"
    media = offline / "files" / "media"
    for name, rows in (("table3", len(table3)), ("trials", 2 * len(ABLATIONS))):
        [logged] = (media / "table").glob(f"{name}_*.table.json")
        assert len(json.loads(logged.read_text())["data"]) == rows, name
    logged = {p.name.rsplit("_", 2)[0] for p in (media / "images" / "figures").glob("*.png")}
    assert logged == {p.stem for p in (out / "figures").glob("*.png")}


def test_wandb_collection_without_a_key_warns_once_and_collects_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="analysis"):
        got = collect_wandb("me/van-ablate", logged_in=False)
    assert got.runs.empty
    assert len(caplog.records) == 1 and "no API key" in caplog.text


def test_results_rebuilt_from_a_wandb_run_land_in_the_paper_row():
    doc = make_results("x", ablation="k7", seed=3, top1=51.0)
    config = {
        "model": {"name": "van_proxy", "layer_scale": True, "dims": None},
        "lka": {k: v for k, v in doc["lka"].items() if k != "resolved_dilation"},
        "data": doc["data"],
        "seed": 3,
        "trial": {"storage": None, "study_name": None, "number": None},
    }
    summary = {k: doc[k] for k in ("status", "best", "final", "complexity", "wall_time_s")}
    rebuilt = results_from_wandb("abc", config, summary, ["van_proxy", "k7"])
    row = run_row(rebuilt, source="wandb", path="wandb:me/p/abc")
    assert (row["ablations"], row["kernel_size"], row["best_top1"]) == ("k7", 7, 51.0)
    table = build_table("kernel", pd.DataFrame([row])).set_index("row")
    assert table.loc["K=7", "top1_mean"] == 51.0


def test_infeasible_and_pruned_trials_are_plotted_but_never_on_the_front(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = make_study(storage, "nas", [])
    dist = {"kernel_size": optuna.distributions.IntDistribution(3, 35)}
    for k, top1, macs, over_budget in [
        (7, 50.0, 1e6, 0.0),
        (21, 60.0, 2e6, 0.0),
        (9, 70.0, 5e5, 1.0),
    ]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"kernel_size": k},
                distributions=dist,
                values=[top1, macs],
                system_attrs={"constraints:complexity.macs": over_budget},
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            params={"kernel_size": 5},
            distributions=dist,
            state=optuna.trial.TrialState.PRUNED,
            user_attrs={"objective_values": [80.0, 1e5]},  # after one epoch of four
        )
    )
    data = load_runs([])
    data.trials = trials_frame(load_study(storage))
    kinds = report.pareto_points(data)["kind"].tolist()
    assert kinds == ["complete", "complete", "infeasible", "pruned"]
    assert report.pareto_front(data)["number"].tolist() == [0, 1]  # #2, #3 beat both


@pytest.mark.slow
def test_benchmark_reports_100_runs_and_a_200_trial_study(tmp_path, capsys):
    benchmark = runpy.run_path(str(REPO / "scripts" / "report_benchmark.py"))

    runs, storage = benchmark["fabricate"](tmp_path, n_runs=100, n_trials=200)
    assert len(list(runs.iterdir())) == 100
    assert benchmark["time_report"](runs, storage, tmp_path / "out") > 0
    assert (tmp_path / "out" / "all.html").stat().st_size > 0
    assert len((tmp_path / "out" / "trials.csv").read_text().splitlines()) == 201
