"""The example report: one command regenerates it from the studies' folders, the same each time,
with no machine paths inside."""

from __future__ import annotations

import filecmp
import runpy
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from report_inputs import make_results, make_study, write_checkpoint, write_run

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "example_report.py"
example_report = SimpleNamespace(**runpy.run_path(str(SCRIPT)))  # scripts/ is not a package

TABLE3 = ["baseline", "no_dw_conv", "no_dwd_conv", "dense_conv"]


@pytest.fixture
def studies(tmp_path, monkeypatch):
    """A tiny ``multirun/`` as the ready studies leave it: table3 (with a journal whose trials
    point at their runs by absolute path, as the sweeper's do) and layer_scale."""
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
    assert "multirun/table3_van_proxy/trial_0" in (committed / "trials.csv").read_text()


def test_without_any_study_folder_it_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert example_report.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--multirun='multirun'" in err
