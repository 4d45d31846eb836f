"""The example report: one command regenerates it from the studies' folders, the same each time,
with no machine paths inside; the committed one shows, in every format, the numbers of its CSVs."""

from __future__ import annotations

import filecmp
import math
import runpy
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from report_inputs import make_results, make_study, non_dominated, write_checkpoint, write_run

from van_ablate.analysis import report

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "example_report.py"
COMMITTED = SCRIPT.parent.parent / "docs" / "example_report"
example_report = SimpleNamespace(**runpy.run_path(str(SCRIPT)))  # scripts/ is not a package

TABLE3 = ["baseline", "no_dw_conv", "no_dwd_conv", "dense_conv"]


@pytest.fixture
def studies(tmp_path, monkeypatch):
    """A tiny ``multirun/`` as the ready studies leave it: table3, nas (the search: a journal whose
    trials point at their runs by absolute path, as the sweeper's do) and layer_scale."""
    monkeypatch.chdir(tmp_path)
    table3 = tmp_path / "multirun" / f"table3_{example_report.MODEL}"
    runs = []
    for i, ablation in enumerate(TABLE3):
        for seed in (0, 1):
            r = make_results(
                f"trial_{len(runs)}",
                ablation=ablation,
                seed=seed,
                top1=60.0 + i + seed,
                trial=(table3.name, len(runs)),
                data={"num_train": 8, "num_val": 4, "cache_dir": "cache"},
            )
            run = write_run(table3, r)
            if seed == 0 and ablation in example_report.ATTENTION:
                write_checkpoint(run, which="best")
            runs.append(r)
    journal = optuna.storages.journal.JournalFileBackend(str(table3 / "optuna_journal.log"))
    make_study(optuna.storages.JournalStorage(journal), table3.name, runs, results_root=table3)
    nas = tmp_path / "multirun" / f"{example_report.SEARCH}_{example_report.MODEL}"
    found = [make_results(f"trial_{i}", seed=i, top1=70.0 + i, trial=(nas.name, i)) for i in (0, 1)]
    for r in found:
        write_run(nas, r)
    journal = optuna.storages.journal.JournalFileBackend(str(nas / "optuna_journal.log"))
    make_study(optuna.storages.JournalStorage(journal), nas.name, found, results_root=nas)
    layer_scale = tmp_path / "multirun" / f"layer_scale_{example_report.MODEL}"
    for seed in (0, 1):
        write_run(layer_scale, make_results(f"ls{seed}", ablation="no_layer_scale", seed=seed))
    return tmp_path


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_the_command_regenerates_the_same_report_without_machine_paths(studies):
    assert example_report.main([]) == 0
    committed = studies / "docs" / "example_report"
    assert example_report.main(["--out", "regenerated"]) == 0
    regenerated = studies / "regenerated"
    names = _files(committed)
    assert names == _files(regenerated)
    assert {"table3.md", "kernel.md", "layer_scale.md", "trials.csv", "all.html"} <= {
        n.name for n in names
    }
    assert "attention/attention_0.png" in map(str, names)
    _, mismatch, errors = filecmp.cmpfiles(committed, regenerated, names, shallow=False)
    assert mismatch == errors == []
    for name in names:
        if name.suffix in (".md", ".csv", ".html"):
            assert str(studies) not in (committed / name).read_text(), name
    assert "multirun/nas_van_proxy/trial_0" in (committed / "trials.csv").read_text()


def test_without_any_study_folder_it_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert example_report.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--multirun='multirun'" in err


# The committed report is made from study folders (multirun/) that are not committed, so it
# cannot be regenerated here; what can be checked is that its Markdown and HTML tables show the
# numbers of its own CSVs, row by row, and that its Pareto front is that of its trials.


def markdown_table(path: Path) -> list[dict[str, str]]:
    """The first Markdown table in ``path``, one dict (header -> cell) per row."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    header, *rows = ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]  # rows[0]: |:---|


class _Tables(HTMLParser):
    """Every ``<table>`` of a page as rows of cell texts (header row included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


PAPER_TABLES = ("table3", "kernel", "layer_scale")


def check_tables_show_their_csv(report: Path) -> None:
    """Each paper table's Markdown rows show its CSV's numbers, in the CSV's order."""
    for table in PAPER_TABLES:
        md = markdown_table(report / f"{table}.md")
        csv = pd.read_csv(report / f"{table}.csv")
        assert len(md) == len(csv) > 0, table
        for shown, (_, row) in zip(md, csv.iterrows(), strict=True):
            where = f"{table}: {row['row']}"
            assert shown["Row"] == row["row"], where
            paper = "—" if _nan(row["paper_top1"]) else f"{row['paper_top1']:.1f}"
            assert shown["Top-1 paper"] == paper, where
            ours = shown["Top-1 ours"]
            if row["missing"]:
                assert ours.startswith("missing"), where
                assert shown["Params (M) ours"] == shown["Train img/s ours"] == "missing", where
                continue
            assert ours.startswith(f"{row['top1_mean']:.2f}"), where
            assert f"n={row['n_seeds']}" in ours, where
            if not _nan(row["top1_std"]):
                assert f"± {row['top1_std']:.2f}" in ours, where
            params = f"{row['params_m']:.3g} / {row['params_counted_m']:.3g}"
            assert shown["Params (M) ours"] == params, where
            assert shown["Train img/s ours"] == f"{row['images_per_sec']:.0f}", where


def check_page_holds_the_markdown_tables(report: Path) -> None:
    page = _Tables()
    page.feed((report / "all.html").read_text())
    for table in PAPER_TABLES:
        md = markdown_table(report / f"{table}.md")
        assert [list(md[0]), *(list(r.values()) for r in md)] in page.tables, table


def check_front_is_that_of_the_trials(report: Path) -> None:
    trials = pd.read_csv(report / "trials.csv")
    complete = trials[(trials["state"] == "COMPLETE") & trials["feasible"]]
    points = list(zip(complete["complexity.macs"], complete["best.val_top1"], strict=True))
    front = pd.read_csv(report / "pareto_front.csv")
    listed = list(zip(front["complexity.macs"], front["best.val_top1"], strict=True))
    assert set(listed) == non_dominated(points) and len(listed) == len(set(listed))
    md = markdown_table(report / "pareto_front.md")
    assert [int(r["number"]) for r in md] == front["number"].tolist()
    assert [float(r["best.val_top1"]) for r in md] == front["best.val_top1"].tolist()


def test_the_committed_report_shows_the_numbers_of_its_own_csvs():
    check_tables_show_their_csv(COMMITTED)
    check_page_holds_the_markdown_tables(COMMITTED)
    if (COMMITTED / "trials.csv").exists():  # only where a search study (nas) was run
        check_front_is_that_of_the_trials(COMMITTED)


def test_a_fresh_report_all_passes_the_same_checks(tmp_path, monkeypatch):
    """The checks above hold for what ``report all`` (the script's command) writes today, so a
    regenerated docs/example_report passes them too."""
    monkeypatch.chdir(tmp_path)
    runs = []
    for i, ablation in enumerate([*TABLE3, "k7", "no_layer_scale"]):
        for seed in (0, 1, 2):
            top1 = 60.0 + i + seed / 2
            r = make_results(f"{ablation}-s{seed}", ablation=ablation, seed=seed, top1=top1)
            runs.append(r)
            write_run(tmp_path / "runs", r)
    make_study("sqlite:///study.db", "nas", runs, results_root=tmp_path / "runs")
    argv = ["all", "runs", "--storage", "sqlite:///study.db", "--format", "md,csv,html"]
    assert report.main([*argv, "--no-svg", "--out", "report"]) == 0
    check_tables_show_their_csv(tmp_path / "report")
    check_page_holds_the_markdown_tables(tmp_path / "report")
    check_front_is_that_of_the_trials(tmp_path / "report")
