"""The benchmark command and its straight-line LKA baseline (official code's LKA)."""

from __future__ import annotations

import json

import pytest
import timm
import torch

import van_ablate  # noqa: F401  (registers the models)
from van_ablate.bench import StraightLKA, benchmark, main, to_straight_line
from van_ablate.errors import ConfigError
from van_ablate.lka import LKA, LKASpec

TINY = ["--model", "van_proxy", "--img-size", "32", "--batch-size", "2", "--warmup", "1"]
TINY += ["--iters", "1", "--repeats", "2", "--threads", "1", "--format", "json"]


@pytest.mark.parametrize("spec", [LKASpec(), LKASpec(kernel_size=7), LKASpec(kernel_size=28)])
def test_straight_line_lka_computes_what_the_switchable_one_does(spec):
    torch.manual_seed(0)
    model = timm.create_model("van_proxy", lka=spec).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        straight = to_straight_line(model)
        got = straight(x)
    assert not any(isinstance(m, LKA) for m in straight.modules())
    assert sum(isinstance(m, StraightLKA) for m in straight.modules()) == 5  # van_proxy blocks
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "spec", [LKASpec(gate="sigmoid"), LKASpec(dense=True), LKASpec(kernel_size=6, dilation=3)]
)
def test_straight_line_refuses_an_lka_that_is_not_three_convs_and_a_product(spec):
    with pytest.raises(ConfigError) as err:
        to_straight_line(timm.create_model("van_proxy", lka=spec))
    assert err.value.key == "straight_line"


def test_benchmark_reports_forward_and_train_images_per_second_for_each_model():
    models = {"a": timm.create_model("van_proxy"), "b": timm.create_model("van_proxy")}
    out = benchmark(models, batch_size=2, img_size=32, warmup=0, iters=1, repeats=2)
    assert set(out) == {"a", "b"}
    for r in out.values():
        for phase in ("forward", "train"):
            assert 0 < r[phase]["min"] <= r[phase]["median"] <= r[phase]["max"]
            assert r[phase]["peak_mib"] is None  # CPU: no peak memory
    assert not any(p.grad is not None for p in models["a"].parameters())


def test_cli_compare_times_both_lkas_in_channels_last(capsys):
    assert main([*TINY, "--compare", "--channels-last", "--lka.kernel_size", "14"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["lka_impl"] for r in records] == ["switchable", "straight-line"]
    for r in records:
        assert r["forward_img_s"] > 0 and r["train_img_s"] > 0
        assert r["channels_last"] is True and r["lka"]["resolved_dilation"] == 3
        assert r["device"] == "cpu" and r["threads"] == 1


def test_cli_markdown_names_the_timing_protocol(capsys):
    assert main([*TINY[:-2], "--straight-line", "--amp", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "| van_proxy | straight-line" in out and "bf16" in out
    assert "Median of 2 blocks of 1 steps after 1 warmup steps" in out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--model", "van_proxy", "--straight-line", "--lka.dense", "true"], "straight_line=True"),
        (["--batch-size", "0"], "batch_size=0: must be an integer >= 1"),
        (["--model", "vit_tiny"], "model='vit_tiny'"),
        (["--lka.combine", "concat"], "lka.combine='concat'"),
    ],
)
def test_cli_rejects_bad_input_on_one_line_with_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_cli_rejects_cuda_where_there_is_none(capsys):
    assert main(["--device", "cuda"]) == 2
    assert "device='cuda'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_compiled_model_runs(capsys):
    assert main([*TINY, "--compile"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["compile"] is True and record["forward_img_s"] > 0


def test_cli_takes_the_apps_override_syntax(capsys):
    argv = ["model=van_proxy", "data.img_size=32", "lka.kernel_size=14", "--batch-size", "2"]
    assert main([*argv, "--warmup", "0", "--iters", "1", "--repeats", "1", "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert (record["model"], record["img_size"]) == ("van_proxy", 32)
    assert record["lka"]["kernel_size"] == 14


def test_cli_refuses_architecture_changes_it_would_not_build(capsys):
    assert main(["model.depths=[1,1,1,1]"]) == 2
    err = capsys.readouterr().err
    assert "model.depths=[1, 1, 1, 1]: unknown key; allowed: model, lka.kernel_size" in err
