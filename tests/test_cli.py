"""Bad input on the command line: one line naming key, value and what is allowed; exit 2; nothing
written. Runs the app in-process (``van_ablate.__main__.main``) except where the real process
matters (exit status and stderr of ``python -m van_ablate``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_RUN, read_results, run_app, run_env, run_main

from van_ablate.__main__ import main
from van_ablate.errors import EXIT_CONFIG, ConfigError


def folder_args(root: Path, run_dir: Path) -> list[str]:
    return [*TINY_RUN, "data=imagefolder", f"data.root={root}", f"hydra.run.dir={run_dir}"]


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_CONFIG, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_nothing_written(run_dir: Path) -> None:
    # Not even the empty log file Hydra opens before the job: the run directory is gone.
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())


BAD_OVERRIDES = [
    (["+ablation=nope"], ["ablation='nope'", "must be one of", "no_sigmoid"]),
    (["train.batchsize=4"], ["train.batchsize=4", "unknown key", "batch_size"]),
    (["+train.batchsize=4"], ["train.batchsize=4", "unknown key", "batch_size"]),
    (["train.batch_size=abc"], ["train.batch_size=abc", "must be an integer"]),
    (["model.layer_scale=maybe"], ["model.layer_scale=maybe", "true or false"]),
    (["lka.kernel_size=0"], ["lka.kernel_size=0", "integer >= 1"]),
    (["lka.dilation=0"], ["lka.dilation=0", "'auto' or an integer >= 1"]),
    (["lka.gate=softmax"], ["lka.gate='softmax'", "none, sigmoid"]),
    (["train.batch_size=0"], ["train.batch_size=0", "integer >= 1"]),
    (["model=van_b9"], ["model='van_b9'", "van_b0"]),
    (["+ablation=[k7,k28]"], ["ablation=", "k7", "k28", "conflict"]),
    (["objective=[epochs.-1.images_per_sec]"], ["objective='epochs.-1.images_per_sec'"]),
    (["train.precision=fp16"], ["train.precision='fp16'", "fp32, bf16"]),
    (["train.epochs=[1"], ["train.epochs=[1", "not a valid override"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), BAD_OVERRIDES, ids=lambda v: str(v[0]))
def test_bad_override_gives_one_line_and_exit_2(overrides, fragments, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, err = run_main([*TINY_RUN, f"hydra.run.dir={run_dir}", *overrides], capsys)
    assert_one_line_error(code, err, *fragments)
    assert_nothing_written(run_dir)


def test_missing_data_root_is_named(tmp_path, capsys):
    code, err = run_main(folder_args(tmp_path / "nowhere", tmp_path / "run"), capsys)
    assert_one_line_error(code, err, "data.root=", "nowhere", "no such folder")
    assert_nothing_written(tmp_path / "run")


def test_empty_data_root_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_main(folder_args(tmp_path / "empty", tmp_path / "run"), capsys)
    assert_one_line_error(code, err, "data.root=", "empty")
    assert_nothing_written(tmp_path / "run")


def test_corrupt_image_stops_the_run_when_asked(image_folder, tmp_path, capsys):
    (image_folder / "train" / "class_0" / "broken.png").write_bytes(b"not a png")
    args = [*folder_args(image_folder, tmp_path / "run"), "data.on_corrupt=stop"]
    code, err = run_main(args, capsys)
    assert_one_line_error(code, err, "data.on_corrupt='stop'", "corrupt", "broken.png")
    assert_nothing_written(tmp_path / "run")


def test_corrupt_image_is_skipped_and_counted_by_default(image_folder, tmp_path, capsys):
    (image_folder / "train" / "class_0" / "broken.png").write_bytes(b"not a png")
    code, err = run_main(folder_args(image_folder, tmp_path / "run"), capsys)
    assert code == 0, err
    results = read_results(tmp_path / "run")
    assert results["status"] == "completed" and results["data"]["skipped"] == 1


def test_unwritable_run_directory_is_named(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = run_main([*TINY_RUN, f"hydra.run.dir={blocker}/run"], capsys)
    assert_one_line_error(code, err, "hydra.run.dir=", "a_file/run")


def test_checkpoint_from_another_config_is_refused_naming_the_keys(image_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, err = run_main(folder_args(image_folder, run_dir), capsys)
    assert code == 0, err
    before = (run_dir / "results.json").read_text()
    code, err = run_main([*folder_args(image_folder, run_dir), "train.lr=0.5"], capsys)
    assert_one_line_error(code, err, "resume=", "another config", "train.lr (")
    assert (run_dir / "results.json").read_text() == before


def test_hydra_full_error_shows_the_exception_instead(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="lka.kernel_size=0"):
        main([*TINY_RUN, f"hydra.run.dir={tmp_path}/run", "lka.kernel_size=0"])


def test_real_process_prints_one_line_without_traceback(tmp_path):
    proc = run_app(["+ablation=nope", "logger=none"], cwd=tmp_path, env=run_env())
    assert proc.returncode == EXIT_CONFIG
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: ablation='nope': must be one of")
    assert not (tmp_path / "runs").exists()
