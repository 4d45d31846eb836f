"""Reports: collection into a DataFrame and the paper's tables regenerated from small real runs."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import logging
import math

import optuna
import pandas as pd
import pytest
from conftest import TINY_RUN, read_results, run_app
from report_inputs import make_results, make_study, write_run

from van_ablate import paper, results
from van_ablate.analysis import render
from van_ablate.analysis.collect import RUN_COLUMNS, load_runs
from van_ablate.analysis.studies import load_study, results_paths, trials_frame
from van_ablate.analysis.tables import TABLE_COLUMNS, build_table
from van_ablate.errors import ConfigError
from van_ablate.sweep.coordinator import SWEEP

# ablation, seed, best top-1
RUNS = [
    ("baseline", 0, 60.0),
    ("baseline", 1, 62.0),
    ("k21", 2, 64.0),  # same model as baseline: pooled into the VAN-B0 and K=21 rows
    ("k7", 0, 50.0),
    ("k7", 1, 52.0),
    ("no_dw_conv", 0, 55.0),
    ("no_layer_scale", 0, 58.0),
]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for ablation, seed, top1 in RUNS:
        write_run(
            root, make_results(f"{ablation}-s{seed}", ablation=ablation, seed=seed, top1=top1)
        )
    write_run(root, make_results("sigmoid-s0", ablation="sigmoid", status="diverged", top1=10.0))
    (root / "torn").mkdir()
    (root / "torn" / "results.json").write_text('{"schema_version": 1, "run_id": "to')
    (root / "foreign").mkdir()
    (root / "foreign" / "results.json").write_text(json.dumps({"accuracy": 0.9}))
    partial = make_results("partial", ablation="k14")
    del partial["lka"]
    write_run(root, partial)
    wrong_type = make_results("wrong_type", ablation="k14")
    wrong_type["data"] = "builtin"
    write_run(root, wrong_type)
    # resume=never moved an earlier baseline-s0 aside: it must not count as another seed
    write_run(root / "baseline-s0" / "superseded" / "20260101-000000", make_results("old"))
    return root


@pytest.fixture(scope="module")
def collection(runs_dir):
    return load_runs([runs_dir])


def test_collection_has_one_row_per_readable_run_with_documented_columns(collection):
    assert list(collection.runs.columns) == list(RUN_COLUMNS)
    assert len(collection.runs) == len(RUNS) + 1  # + the diverged run
    k7 = collection.runs.set_index("run_id").loc["k7-s0"]
    assert (k7["kernel_size"], k7["dilation"], k7["best_top1"]) == (7, 2, 50.0)
    assert len(collection.epochs) == 3 * (len(RUNS) + 1)


def test_a_schema_2_results_json_reads_with_its_presets_as_ablations(tmp_path):
    current = make_results("k7-s0", ablation="k7")
    old = copy.deepcopy(current)
    old["schema_version"] = 2
    old["presets"] = old.pop("ablations")
    assert results.readable(old) and results.upgrade(old) == current
    write_run(tmp_path, old)
    [row] = load_runs([tmp_path]).runs.to_dict("records")
    assert (row["run_id"], row["ablations"], row["kernel_size"]) == ("k7-s0", "k7", 7)


def test_corrupt_partial_and_foreign_files_are_skipped_and_named(runs_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="analysis"):
        skipped = dict(load_runs([runs_dir]).skipped)
    names = {p.split("/")[-2]: reason for p, reason in skipped.items()}
    assert set(names) == {"torn", "foreign", "partial", "wrong_type"}
    assert "missing lka" in names["partial"]
    assert "schema_version" in names["foreign"]
    for path in skipped:
        assert path in caplog.text


def test_table3_rows_come_in_the_papers_order_with_the_papers_figures(collection):
    table = build_table("table3", collection.runs)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(table["row"]) == [r.label for r in paper.TABLE3]
    assert list(table["paper_top1"]) == [r.top1 for r in paper.TABLE3]
    assert list(table["paper_params_printed"])[-2:] == ["124.7", "4.1"]
    assert set(table["model"]) == {"van_proxy"}


def test_top1_is_mean_and_sample_std_over_seeds(collection):
    base = build_table("table3", collection.runs).set_index("row").loc["VAN-B0"]
    assert base["top1_mean"] == pytest.approx(62.0)
    assert base["top1_std"] == pytest.approx(2.0)  # std of 60, 62, 64 (ddof=1)
    assert (base["n_runs"], base["n_seeds"]) == (3, 3)
    k7 = build_table("kernel", collection.runs).set_index("row").loc["K=7"]
    assert (k7["top1_mean"], k7["top1_std"]) == (51.0, pytest.approx(math.sqrt(2)))


def test_rows_without_runs_are_marked_missing_never_filled_in(collection):
    table = build_table("table3", collection.runs).set_index("row")
    assert table.loc["w/o DW-D-Conv", "missing"]
    assert math.isnan(table.loc["w/o DW-D-Conv", "top1_mean"])
    assert math.isnan(table.loc["w/o DW-D-Conv", "params_m"])
    lines = render.to_markdown(table.reset_index(), "table3").splitlines()
    header = next(ln for ln in lines if ln.startswith("| Row"))
    line = next(ln for ln in lines if "DW-D" in ln)
    cells = dict(
        zip(
            [c.strip() for c in header.strip("|").split("|")],
            [c.strip() for c in line.strip("|").split("|")],
            strict=True,
        )
    )
    assert cells["Params (M) ours"] == cells["MACs (G) ours"] == cells["Top-1 ours"] == "missing"
    assert cells["Params (M) paper"] == "4.0"  # the paper's figures stay


def test_not_completed_runs_are_counted_but_not_pooled(collection):
    sigmoid = build_table("table3", collection.runs).set_index("row").loc["w/ Sigmoid"]
    assert sigmoid["missing"] and sigmoid["n_not_completed"] == 1


def test_deltas_to_our_baseline_and_to_the_paper(collection):
    table = build_table("table3", collection.runs).set_index("row")
    no_dw = table.loc["w/o DW-Conv"]
    # paired: its one seed against the baseline's seed 0; Welch: against the baseline's mean
    assert no_dw["delta_baseline"] == pytest.approx(55.0 - 60.0)
    assert no_dw["welch_delta"] == pytest.approx(55.0 - 62.0)
    assert no_dw["paper_delta_baseline"] == pytest.approx(74.9 - 75.4)
    assert no_dw["delta_paper"] == pytest.approx(55.0 - 74.9)
    assert not no_dw["same_scale"]  # van_proxy on builtin data is not VAN-B0 on ImageNet


def test_complexity_columns_come_from_the_runs_closed_form_and_counted(collection):
    row = build_table("kernel", collection.runs).set_index("row").loc["K=7"]
    k7 = collection.runs.set_index("run_id").loc["k7-s0"]
    assert row["params_m"] == pytest.approx(k7["params"] / 1e6)
    assert row["macs_counted_g"] == pytest.approx(k7["macs_counted"] / 1e9)


def test_layer_scale_table_adds_our_models_after_the_papers(collection):
    table = build_table("layer_scale", collection.runs)
    paper_models = [r.model for r in paper.LAYER_SCALE_TABLE]
    assert list(table["model"]) == [m for m in paper_models for _ in (0, 1)] + ["van_proxy"] * 2
    ours = table[table["model"] == "van_proxy"].set_index("row")
    assert ours.loc["van_proxy w/o LayerScale", "top1_mean"] == 58.0
    assert ours.loc["van_proxy w/o LayerScale", "delta_baseline"] == pytest.approx(58.0 - 60.0)
    assert math.isnan(ours.loc["van_proxy w/ LayerScale", "paper_top1"])
    b0 = table[table["model"] == "van_b0"]
    assert b0["missing"].all() and list(b0["paper_top1"]) == [75.4, 75.2]


def test_runs_of_another_recipe_are_not_pooled(tmp_path):
    for seed, (epochs, top1) in enumerate([(10, 60.0), (10, 62.0), (50, 70.0)]):
        r = make_results(f"b{seed}", ablation="baseline", seed=seed, top1=top1)
        r["config"]["train"] = {"epochs": epochs}
        write_run(tmp_path, r)
    table = build_table("kernel", load_runs([tmp_path]).runs)
    k21 = table[table["row"] == "K=21"].set_index("recipe")
    assert sorted(k21["top1_mean"]) == [61.0, 70.0]
    assert "recipe" in render.display_frame(table).iloc[0]["Model"]


def test_no_runs_at_all_still_renders_every_row_missing():
    empty = load_runs([])
    table = build_table("kernel", empty.runs)
    assert list(table["row"]) == ["K=7", "K=14", "K=21", "K=28"] and table["missing"].all()
    assert render.to_markdown(table, "kernel").count("missing") >= 4


def test_latex_escapes_names_and_typesets_pm_and_delta(collection):
    tex = render.to_latex(build_table("table3", collection.runs), "table3")
    assert r"van\_proxy" in tex and r"$\pm$" in tex and r"$\Delta$ paper" in tex
    assert "±" not in tex and "Δ" not in tex


def test_csv_round_trips_the_numbers(collection, tmp_path):
    table = build_table("table3", collection.runs)
    (tmp_path / "t.csv").write_text(render.to_csv(table))
    back = pd.read_csv(tmp_path / "t.csv")
    assert back["top1_mean"].iloc[-1] == pytest.approx(62.0)
    assert list(back["row"]) == list(table["row"])


def test_unknown_table_is_a_config_error(collection):
    with pytest.raises(ConfigError, match="table='table9'"):
        build_table("table9", collection.runs)


def test_study_trials_carry_states_values_and_user_attributes(tmp_path):
    runs = [make_results(f"t{i}", ablation=p, top1=50.0 + i) for i, p in enumerate(["k7", "k14"])]
    for r in runs:
        write_run(tmp_path / "runs", r)
    journal = tmp_path / "journal.log"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    make_study(storage, "s", runs, results_root=tmp_path / "runs")
    study = load_study(str(journal))  # its only study, opened from the journal file path
    trials = trials_frame(study)
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    assert list(trials["best.val_top1"]) == [50.0, 51.0]
    assert list(trials["param.kernel_size"]) == [7, 14]
    assert trials["attr.macs"].iloc[0] == runs[0]["complexity"]["macs"]
    assert [p.parent.name for p in results_paths(trials)] == ["t0", "t1"]


def test_a_study_swept_before_the_objective_key_was_renamed_names_its_columns(tmp_path):
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path / 's.db'}")
    make_study(storage, "nas", [make_results("t0", ablation="k7", top1=61.0)])
    study_id = storage.get_study_id_from_name("nas")
    old = {"objectives": storage.get_study_system_attrs(study_id)[SWEEP].pop("objective")}
    storage.set_study_system_attr(study_id, SWEEP, old)  # as the previous sweeper stored it
    trials = trials_frame(load_study(f"sqlite:///{tmp_path / 's.db'}"))
    assert trials.attrs["objective"] == ["best.val_top1", "complexity.macs"]
    assert trials["best.val_top1"].tolist() == [61.0]


def test_study_not_in_storage_names_the_studies_there(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    make_study(storage, "table3", [])
    with pytest.raises(ConfigError, match="study='nas'.*table3"):
        load_study(storage, "nas")
    with pytest.raises(ConfigError, match="storage="):
        load_study(str(tmp_path / "nope.log"))


def test_infeasible_and_pruned_trials_are_marked_and_pruned_keep_their_values(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = make_study(storage, "nas", [])
    optuna.create_study(storage=storage, study_name="nas.pruning")  # the sweeper's twin
    dist = {"kernel_size": optuna.distributions.IntDistribution(3, 35)}
    study.add_trial(
        optuna.trial.create_trial(
            params={"kernel_size": 7},
            distributions=dist,
            values=[60.0, 2e6],
            system_attrs={"constraints:complexity.macs": 1e5},  # Optuna's constraint key
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            params={"kernel_size": 9},
            distributions=dist,
            state=optuna.trial.TrialState.PRUNED,
            user_attrs={"objective_values": [41.0, 1e6]},
        )
    )
    trials = trials_frame(load_study(storage))  # the twin does not make the choice ambiguous
    assert list(trials["feasible"]) == [False, True]
    assert list(trials["state"]) == ["COMPLETE", "PRUNED"]
    assert trials["best.val_top1"].tolist() == [60.0, 41.0]


def test_runs_repeating_a_seed_are_averaged_before_the_spread_over_seeds(tmp_path):
    for run_id, seed, top1 in [("a", 0, 60.0), ("b", 0, 64.0), ("c", 1, 70.0)]:
        write_run(tmp_path, make_results(run_id, ablation="baseline", seed=seed, top1=top1))
    table = build_table("kernel", load_runs([tmp_path]).runs)
    k21 = table.set_index("row").loc["K=21"]
    assert k21["top1_mean"] == pytest.approx((62.0 + 70.0) / 2)
    assert (k21["n_seeds"], k21["n_runs"]) == (2, 3)
    assert render.display_frame(table)["Top-1 ours"][2] == "66.00 ± 5.66 (n=2 in 3 runs)"


def test_report_inputs_have_the_layout_a_real_training_run_writes(tmp_path):
    """The fixtures above stand in for training: same keys at every level, same data classes."""
    args = [*TINY_RUN, "data=builtin", "data.num_train=32", "data.num_val=16"]
    args += [f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_app(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    real, made = read_results(tmp_path / "run"), make_results("r", ablation="baseline")

    def layout(doc: dict) -> dict:
        return {k: layout(v) if isinstance(v, dict) else None for k, v in doc.items()}

    assert layout(made) == layout(real)
    assert made["epochs"][0].keys() == real["epochs"][0].keys()
    assert made["data"]["num_classes"] == real["data"]["num_classes"] == 4


@pytest.fixture
def lka_with_a_new_switch(monkeypatch):
    """LKASpec with one more switch, ``norm`` (off by default), as a new ablation would add it:
    the paper's rows and the report modules imported anew on it, and on the real one after."""
    from van_ablate.analysis import collect, registry, report, tables
    from van_ablate.model import lka
    from van_ablate.paper import ablation, figures

    modules = [ablation, figures, paper, collect, registry, tables, report]
    spec = dataclasses.make_dataclass(
        "LKASpec", [("norm", bool, False)], bases=(lka.LKASpec,), unsafe_hash=True
    )
    monkeypatch.setattr(lka, "LKASpec", spec)
    for module in modules:
        importlib.reload(module)
    yield collect, tables, report
    monkeypatch.undo()
    for module in modules:
        importlib.reload(module)


def test_a_new_lka_switch_is_a_column_and_never_pooled_into_a_paper_row(
    lka_with_a_new_switch, tmp_path
):
    collect, tables, report = lka_with_a_new_switch
    for seed, norm in enumerate([False, True]):
        r = make_results(f"baseline-s{seed}", seed=seed, top1=60.0 + 10 * seed)
        r["lka"]["norm"] = norm  # as training with lka.norm=true would record it
        write_run(tmp_path, r)
    data = collect.load_runs([tmp_path])
    assert "norm" in collect.SPEC_COLUMNS and "norm" in collect.RUN_COLUMNS
    assert list(data.runs.sort_values("seed")["norm"]) == [False, True]
    k21 = tables.build_table("kernel", data.runs).set_index("row").loc["K=21"]
    assert (k21["n_runs"], k21["top1_mean"]) == (1, 60.0)  # the paper's LKA has no norm
    assert list(tables.runs_in_no_table(["kernel"], data.runs)["run_id"]) == ["baseline-s1"]
    assert sorted(report.pareto_points(data)["top1"]) == [60.0, 70.0]  # two points, not one
