"""Closed forms (Eq. 3/4), fvcore counts and the printed figures of Table 3 and the kernel table."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import warnings
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
import torch

from van_ablate import paper
from van_ablate.errors import ConfigError
from van_ablate.model.complexity import (
    Cost,
    count_cost,
    lka_macs,
    lka_params,
    stage_sides,
    van_cost,
)
from van_ablate.model.lka import LKA, LKASpec
from van_ablate.model.spec import ModelSpec
from van_ablate.model.van import ARCHS
from van_ablate.paper.tables import compare_rows, main

REPO = Path(__file__).resolve().parents[1]
TINY = dict(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1))

# Every switch, the dense conv (odd and even K: the even one pads asymmetrically through F.pad),
# an even K whose DW-D-Conv pads asymmetrically, and an explicit dilation.
SPECS = [
    LKASpec(),
    LKASpec(dw_conv=False),
    LKASpec(dwd_conv=False),
    LKASpec(pw_conv=False),
    LKASpec(dw_conv=False, pw_conv=False),
    LKASpec(gate="sigmoid", combine="add"),
    LKASpec(combine="none"),
    LKASpec(dense=True),
    LKASpec(kernel_size=14, dense=True),
    LKASpec(kernel_size=6, dilation=3),
    LKASpec(kernel_size=28),
    LKASpec(kernel_size=9, dilation=1),
]


def _spec_id(spec: LKASpec) -> str:
    changed = {k: v for k, v in dataclasses.asdict(spec).items() if v != getattr(LKASpec(), k)}
    return ",".join(f"{k}={v}" for k, v in changed.items()) or "default"


def _fvcore_analysis(model: torch.nn.Module, x: torch.Tensor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis
    analysis = FlopCountAnalysis(model.eval(), x)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


@pytest.mark.parametrize("channels", [1, 7, 64])
@pytest.mark.parametrize("kernel_size,dilation", [(21, 3), (7, 2), (14, 3), (28, 4), (9, 1)])
def test_lka_closed_forms_are_eq3_and_eq4_at_default_switches(channels, kernel_size, dilation):
    eq3 = channels * (math.ceil(kernel_size / dilation) ** 2 + (2 * dilation - 1) ** 2 + channels)
    assert lka_params(channels, kernel_size, dilation) == eq3
    assert lka_macs(channels, kernel_size, dilation, 14, 9) == eq3 * 14 * 9


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_lka_params_with_biases_equal_the_built_module(spec):
    switches = dict(dw_conv=spec.dw_conv, dwd_conv=spec.dwd_conv, pw_conv=spec.pw_conv)
    closed = lka_params(
        12, spec.kernel_size, spec.dilation, dense=spec.dense, bias=True, **switches
    )
    assert closed == sum(p.numel() for p in LKA(12, spec).parameters())


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_lka_macs_equal_fvcore_count_of_the_module(spec):
    switches = dict(dw_conv=spec.dw_conv, dwd_conv=spec.dwd_conv, pw_conv=spec.pw_conv)
    closed = lka_macs(6, spec.kernel_size, spec.dilation, 11, 11, dense=spec.dense, **switches)
    assert count_cost(LKA(6, spec), img_size=11, in_chans=6).macs == closed


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_van_closed_form_equals_fvcore_count_in_every_convention(spec):
    closed = van_cost(**TINY, lka=spec, img_size=50, num_classes=10)
    model = ModelSpec("van_proxy", spec, num_classes=10, **TINY).build()
    assert count_cost(model, img_size=50) == closed


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(img_size=32, layer_scale=False),
        dict(img_size=37, in_chans=1, num_classes=0),
        dict(img_size=64, mlp_ratios=(2, 3, 1.5, 4)),
    ],
    ids=["no_layer_scale", "odd_size_gray_headless", "other_mlp_ratios"],
)
def test_summary_closed_form_equals_count_for_other_model_options(kwargs):
    summary = ModelSpec("van_proxy", LKASpec(kernel_size=14), **TINY, **kwargs).cost()
    assert summary["params"] == summary["params_counted"]
    assert summary["macs"] == summary["macs_counted"]
    assert summary["flops_paper"] == summary["flops_paper_counted"]
    assert summary["img_size"] == kwargs["img_size"]


def test_summary_has_the_contract_keys_as_ints():
    summary = ModelSpec("van_proxy", {"kernel_size": 7}, img_size=32).cost()
    contract = {"params", "params_counted", "macs", "macs_counted", "flops_paper", "img_size"}
    assert contract <= set(summary)
    assert all(type(v) is int for v in summary.values())


def test_summary_leaves_the_callers_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ModelSpec("van_proxy", img_size=32).cost()
    assert torch.equal(torch.rand(3), expected)


def test_van_b0_paper_convention_gives_0_88_g_and_macs_alone_0_864_g():
    summary = ModelSpec("van_b0").cost()
    assert summary["params"] == summary["params_counted"] == 4_105_800
    assert summary["macs"] == summary["macs_counted"] == 864_224_000  # 0.864 G
    assert summary["flops_paper"] == summary["flops_paper_counted"]
    assert paper.paper_round(summary["flops_paper"] / 1e9, 2) == 0.88


def test_fvcore_default_count_differs_from_the_paper_convention_by_bias_and_layernorm_only():
    """fvcore skips conv biases and counts LayerNorm as 5 per element, mmcv as 2: nothing else."""
    cost = van_cost(ARCHS["van_b0"]["dims"], ARCHS["van_b0"]["depths"])
    layer_norm_elements = sum(
        dim * side * side
        for dim, side in zip(ARCHS["van_b0"]["dims"], stage_sides(224), strict=True)
    )
    assert cost.ln_flops == 2 * layer_norm_elements
    default = _fvcore_analysis(ModelSpec("van_b0").build(), torch.zeros(1, 3, 224, 224)).total()
    assert cost.flops_paper - default == cost.bias_adds - 3 * layer_norm_elements


REASON_DWD = "the paper prints 0.9 G; the convention that reproduces every other row gives 0.8485 G"


def _paper_rows(figure: str) -> list:
    rows = []
    for table, printed in (("table3", paper.TABLE3), ("kernel", paper.KERNEL_TABLE)):
        for row in printed:
            # The one printed figure mmcv's count does not give (explained by the test below).
            missed = figure == "flops" and row.label == "w/o DW-D-Conv"
            marks = [pytest.mark.xfail(strict=True, reason=REASON_DWD)] if missed else []
            rows.append(pytest.param(row, id=f"{table}:{row.label}", marks=marks))
    return rows


@pytest.mark.parametrize("row", _paper_rows("params"))
def test_table3_and_kernel_rows_match_the_printed_params(row):
    cost = van_cost(ARCHS[row.model]["dims"], ARCHS[row.model]["depths"], lka=row.lka)
    assert paper.paper_round(cost.params / 1e6, row.params_decimals) == row.params


@pytest.mark.parametrize("row", _paper_rows("flops"))
def test_table3_and_kernel_rows_match_the_printed_flops(row):
    cost = van_cost(ARCHS[row.model]["dims"], ARCHS[row.model]["depths"], lka=row.lka)
    assert paper.paper_round(cost.flops_paper / 1e9, row.flops_decimals) == row.flops


def test_without_dwd_conv_flops_gap_is_exactly_its_conv():
    """Removing the 7x7 DW-D-Conv takes off its 49 weights + 1 bias at every channel-position.

    mmcv's count then gives 0.8485 G, printed 0.8; the paper prints 0.9, which would need
    VAN-B0 itself at >= 0.8817 G instead of 0.8802 G. No other row needs that.
    """
    arch = ARCHS["van_b0"]
    base = van_cost(arch["dims"], arch["depths"])
    row = next(r for r in paper.TABLE3 if r.ablation == "no_dwd_conv")
    without = van_cost(arch["dims"], arch["depths"], lka=row.lka)
    sides = stage_sides(224)
    positions = sum(
        d * depth * s * s for d, depth, s in zip(arch["dims"], arch["depths"], sides, strict=True)
    )
    assert base.flops_paper - without.flops_paper == 50 * positions
    assert without.flops_paper == 848_537_728
    assert paper.paper_round(without.flops_paper / 1e9, 1) == 0.8 != row.flops


@pytest.mark.parametrize("name", [f"van_b{i}" for i in range(7)])
def test_b0_to_b6_params_match_the_paper(name):
    row = paper.MODELS[name]
    cost = van_cost(ARCHS[name]["dims"], ARCHS[name]["depths"])
    assert paper.paper_round(cost.params / 1e6, row.params_decimals) == row.params


def test_registered_architectures_are_the_paper_figures_model_table():
    """The model's own table (plain data in van.py) is Table 2 as the paper's figures print it."""
    for name, printed in paper.FIGURES["models"].items():
        if isinstance(printed, dict):
            assert list(ARCHS[name]["dims"]) == printed["dims"]
            assert list(ARCHS[name]["depths"]) == printed["depths"]
            assert list(ARCHS[name]["mlp_ratios"]) == printed["mlp_ratios"]
            assert ARCHS[name]["drop_path_rate"] == printed["drop_path"]


def test_kernel_rows_resolve_to_the_papers_dilation_and_ablations_cover_every_row():
    printed_d = {r["K"]: r["d"] for r in paper.FIGURES["kernel_size_table"]}
    assert {r.lka.kernel_size: r.lka.resolved_dilation for r in paper.KERNEL_TABLE} == printed_d
    expected = {"no_dw_conv", "no_dwd_conv", "no_attention", "attention_add", "no_pw_conv"}
    expected |= {"sigmoid", "dense_conv", "baseline", "k7", "k14", "k21", "k28", "no_layer_scale"}
    assert set(paper.ABLATIONS) == expected
    assert paper.ABLATIONS["no_layer_scale"]["layer_scale"] is False
    assert paper.ABLATIONS["baseline"]["lka"] == LKASpec()


# A consistency test: the reference lives outside the package, so nothing can derive from it.
def test_packaged_figures_are_a_verbatim_copy_of_the_reference():
    reference = REPO.parent / "shared" / "reference" / "van_paper.yaml"
    if not reference.exists():
        pytest.skip("reference figures not present on this machine")
    packaged = REPO / "van_ablate" / "paper" / "figures.yaml"
    assert packaged.read_text() == reference.read_text()


def test_cost_adds_and_scales_field_by_field():
    a = Cost(params=1, macs=2, bias_adds=3, bn_flops=4, ln_flops=5)
    assert a + a * 2 == Cost(3, 6, 9, 12, 15)
    assert a.flops_paper == 2 + 3 + 4 + 5


@pytest.mark.parametrize(
    "call,key",
    [
        (lambda: ModelSpec("resnet50").cost(), "model"),
        (lambda: ModelSpec("van_b0", img_size=0).cost(), "img_size"),
        (lambda: van_cost((8, 16), (1,)), "depths"),
        (lambda: lka_params(0), "channels"),
        (lambda: lka_macs(8, 21, "3", 7, 7), "lka.dilation"),
    ],
    ids=["model", "img_size", "depths", "channels", "dilation"],
)
def test_bad_input_raises_a_config_error_naming_the_key(call, key):
    with pytest.raises(ConfigError) as err:
        call()
    assert err.value.key == key


def test_cli_prints_the_kernel_table_as_json_with_counts_equal_to_closed_forms(capsys):
    assert main(["--table", "kernel", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["img_size"] == 224 and "flops" in out["conventions"]
    assert [r["row"] for r in out["rows"]] == ["K=7", "K=14", "K=21", "K=28"]
    for r in out["rows"]:
        assert r["flops_paper"] == r["flops_paper_counted"]
        assert r["params"] == r["params_counted"]
        assert r["matches_paper"] is True


def test_cli_prints_markdown_and_csv(capsys):
    assert main(["--table", "table3", "--count", "none"]) == 0
    markdown = capsys.readouterr().out
    assert "| w/ (21x21 Conv)" in markdown and "FLOPs paper (G)" in markdown
    assert "NO on table3 w/o DW-D-Conv" in markdown
    assert main(["--table", "models", "--format", "csv", "--count", "none"]) == 0
    csv = pd.read_csv(StringIO(capsys.readouterr().out))
    assert list(csv["row"]) == [f"van_b{i}" for i in range(7)]
    assert list(csv["params"])[0] == 4_105_800


def test_cli_composed_model_finds_its_paper_row(capsys):
    assert main(["--model", "van_b0", "--lka.kernel_size", "7", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["table"] == "composed" and row["ablation"] == "k7"
    assert row["params_printed"] == 4.03 and row["matches_paper"] is True


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--lka.gate", "softmax"], "lka.gate='softmax': must be one of none, sigmoid"),
        (["--lka.kernel_size", "x"], "lka.kernel_size='x'"),
        (["--lka.dw_conv", "maybe"], "lka.dw_conv='maybe': must be true or false"),
        (["--model", "resnet50"], "model='resnet50': must be one of van_b0"),
        (["--img-size", "0"], "img_size=0"),
    ],
)
def test_cli_rejects_bad_values_with_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_module_entry_point_rejects_an_unknown_format_on_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "van_ablate.complexity", "--format", "xml"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid choice: 'xml'" in result.stderr


def test_auto_count_leaves_models_above_10_g_to_the_closed_form():
    rows = [("models", "van_b6", ModelSpec("van_b6"), paper.MODELS["van_b6"])]
    (record,) = compare_rows(rows, count="auto")
    assert record["params_counted"] is None and record["flops_paper_counted"] is None
    assert record["params"] == 199_829_416
    with pytest.raises(ConfigError):
        compare_rows(rows, count="some")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["van_b4", "van_b5", "van_b6"])
def test_large_models_closed_form_equals_count_at_224(name):
    summary = ModelSpec(name).cost()
    assert summary["params"] == summary["params_counted"]
    assert summary["macs"] == summary["macs_counted"]
    assert summary["flops_paper"] == summary["flops_paper_counted"]


def test_cli_takes_the_apps_override_syntax_with_the_options_as_aliases(capsys):
    assert main(["model=van_b0", "lka.kernel_size=7", "--format", "json"]) == 0
    overrides = json.loads(capsys.readouterr().out)["rows"]
    assert main(["--model", "van_b0", "--lka.kernel_size", "7", "--format", "json"]) == 0
    assert overrides == json.loads(capsys.readouterr().out)["rows"]
    assert overrides[0]["ablation"] == "k7"


def test_cli_composed_architecture_change_has_no_paper_row(capsys):
    argv = ["model=van_b0", "model.depths=[2,2,2,2]", "data.img_size=64", "--format", "json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["rows"]
    assert out["img_size"] == 64 and row["ablation"] is None and row["matches_paper"] is None
    assert (
        row["params"]
        == row["params_counted"]
        == ModelSpec("van_b0", depths=(2, 2, 2, 2)).cost()["params"]
    )


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["lka.size=7"], "lka.size=7: unknown key; allowed: model, model.layer_scale"),
        (["lka.kernel_size=7,14"], "lka.kernel_size='7,14': must be one value"),
        (["lka.kernel_size=[7"], "lka.kernel_size='lka.kernel_size=[7': not a valid override"),
        (["model.dims=[1,2]"], "model.dims=[1, 2]: must be 4 positive numbers"),
        (["lka.gate=softmax"], "lka.gate='softmax': must be one of none, sigmoid"),
    ],
)
def test_cli_rejects_bad_overrides_with_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
