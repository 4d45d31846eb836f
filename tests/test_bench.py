"""The benchmark command and its straight-line LKA baseline (official code's LKA)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import timm
import torch
from conftest import REPO, run_env

import van_ablate  # noqa: F401  (registers the models)
from van_ablate.bench import StraightLKA, benchmark, main, to_straight_line
from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKA, LKASpec
from van_ablate.train.hardware import available_cpus

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
    assert "Median of 2 blocks of 1 steps after 1 warmup steps (min-max in brackets)" in out
    assert "1 CPU threads of" in out and "OMP_WAIT_POLICY=" in out
    row = next(line for line in out.splitlines() if "straight-line" in line)
    assert re.search(r"\| \d+\.\d \(\d+\.\d-\d+\.\d\) *\|", row)  # median (min-max)


def test_cli_says_what_it_times_as_it_goes_on_stderr(capsys):
    assert main([*TINY, "--compare"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout stays the report alone
    lines = captured.err.splitlines()
    assert lines[0].startswith("[bench] van_proxy at 32 px, batch 2, on cpu, 1 thread(s)")
    for phase in ("forward", "fwd+bwd"):
        for name in ("switchable", "straight-line"):
            assert f"[bench] {phase}: {name}: warm-up, 1 step(s) of 2 images" in lines
            blocks = [ln for ln in lines if ln.startswith(f"[bench] {phase}: {name}: block")]
            assert [b.split(":")[2] for b in blocks] == [" block 1/2", " block 2/2"]
            assert all(b.endswith("s)") and "img/s" in b for b in blocks)


def test_threads_default_to_the_cpus_this_process_may_use(capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        i = TINY.index("--threads")
        assert main(TINY[:i] + TINY[i + 2 :]) == 0
    finally:
        torch.set_num_threads(before)
    (record,) = json.loads(capsys.readouterr().out)
    assert record["threads"] == record["cpus_available"] == available_cpus()


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


def test_the_gpu_check_runs_end_to_end_on_cpu_at_tiny_sizes():
    tiny = ["--device", "cpu", "--img-size", "32", "--batch-size", "2", "--steps", "1"]
    tiny += ["--infer-batch-size", "2", "--no-compile", "--app-images", "16", "--workers", "0"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), *tiny],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "| fp32 eager | straight-line (official) |" in out
    assert "| bf16 + channels_last | switchable (ours) |" in out
    assert re.search(r"speed-up: \d+\.\d\dx", out)
    for name in ("van_b0", "van_b1", "van_b2"):
        assert re.search(rf"\| {name} \| \d+ \| - \|", out)
    assert re.search(r"app \(python -m van_ablate.*status completed, device cpu", out)
    assert "[gpu-check] training step, official setting" in proc.stderr


def test_the_gpu_check_says_so_when_there_is_no_gpu():
    if torch.cuda.is_available():
        pytest.skip("checks the message on a CPU-only machine")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py")],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "device='cuda': no CUDA device here; use --device cpu" in proc.stderr


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


def test_precision_is_named_as_train_precision_and_amp_stays_its_older_name(capsys):
    for args, expected in ((["--precision", "bf16"], "bf16"), (["--amp", "none"], "fp32")):
        assert main([*TINY, "--straight-line", *args]) == 0
        [record] = json.loads(capsys.readouterr().out)
        assert record["precision"] == expected
