"""The data-loading benchmark: the paper's train transforms on generated JPEGs against the step."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from van_ablate.data.loaders import build_loaders
from van_ablate.loader_bench import (
    LoaderSetting,
    loader_images_per_sec,
    main,
    paper_data_config,
    write_jpegs,
)

TINY = ["--model", "van_proxy", "--img-size", "32", "--batch-size", "4", "--images", "8"]
TINY += ["--epochs", "1", "--repeats", "1", "--device", "cpu"]


def test_it_writes_an_image_folder_of_jpegs_at_the_asked_size(tmp_path):
    write_jpegs(tmp_path, images=8, classes=4, size=48)
    train = sorted((tmp_path / "train").rglob("*.jpg"))
    assert len(train) == 8 and len(list((tmp_path / "validation").rglob("*.jpg"))) == 4
    assert {p.parent.name for p in train} == {f"class_{c}" for c in range(4)}
    with Image.open(train[0]) as img:
        assert img.format == "JPEG" and img.size == (48, 48)


def test_the_loader_uses_the_papers_train_transforms(tmp_path):
    cfg = paper_data_config(tmp_path, img_size=32, workers=1)
    assert cfg.auto_augment == "rand-m9-mstd0.5-inc1" and cfg.re_prob == 0.25
    assert (cfg.img_size, cfg.num_workers, cfg.root) == (32, 1, str(tmp_path))


def test_loader_settings_reach_the_torch_loader(tmp_path):
    write_jpegs(tmp_path, images=8, size=32)
    cfg = paper_data_config(tmp_path, img_size=32, workers=1)
    train, _, _ = build_loaders(
        cfg, batch_size=4, eval_batch_size=4, seed=0, persistent_workers=True, prefetch_factor=3
    )
    assert train.loader.persistent_workers is True and train.loader.prefetch_factor == 3
    rate = loader_images_per_sec(
        tmp_path, LoaderSetting(0), batch_size=4, img_size=32, epochs=2, device="cpu"
    )
    assert rate > 0


def test_it_reports_each_setting_against_the_training_step(capsys):
    assert main([*TINY, "--workers", "0", "1", "--format", "json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [r["workers"] for r in report["loaders"]] == [0, 1]
    for r in report["loaders"]:
        assert r["loader_img_s"] > 0 and r["train_step_img_s"] > 0
        assert r["input_bound"] == (r["loader_img_s"] < r["train_step_img_s"])
    assert "[loader-bench] writing 8 JPEGs of 32 px" in captured.err
    assert "[loader-bench] loader 2/2:" in captured.err


def test_the_markdown_table_says_whether_the_run_is_input_bound(capsys):
    assert main([*TINY, "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "| workers" in out and "| input-bound" in out
    row = next(line for line in out.splitlines() if line.startswith("| 0 "))
    assert row.rstrip(" |").endswith(("yes", "no"))
    assert "with the paper's train transforms" in out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--images", "2", "--batch-size", "4"], "images=2: must be >= --batch-size 4"),
        (["--workers", "-1"], "workers=[-1]: must be integers >= 0"),
        (["--model", "vit_tiny"], "model='vit_tiny'"),
        (["--epochs", "0"], "epochs=0: must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
