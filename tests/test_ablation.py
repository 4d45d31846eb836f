"""Ablations and recipes compose into the configs the paper's rows and recipe describe."""

from __future__ import annotations

import dataclasses

import pytest
import timm
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import van_ablate.__main__  # noqa: F401  (registers the schema and the run-name resolver)
from van_ablate import paper
from van_ablate.config import (
    TrainConfig,
    global_batch_steps,
    scaled_lr,
    validate,
)
from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKASpec
from van_ablate.model.spec import ModelSpec
from van_ablate.paper.ablation import CONF_PACKAGE, ablation_names
from van_ablate.runs import ablations_from_overrides

# What each ablation must build, written from the paper (Table 3, Fig. 3 and the kernel-size
# table of "Visual Attention Network"; docs/model.md), never read from conf/ablation/: the paper's
# LKA is K=21, d=3 (the d minimising Eq. 3), every part on, no gate, the product with the input.
PAPER_LKA = {
    "kernel_size": 21,
    "dilation": 3,
    "dw_conv": True,
    "dwd_conv": True,
    "pw_conv": True,
    "gate": "none",
    "combine": "mul",
    "dense": False,
}
# ablation: (the printed row it builds or None, what differs from PAPER_LKA, LayerScale on)
PAPER_ROWS = {
    "baseline": ("VAN-B0", {}, True),
    "no_dw_conv": ("w/o DW-Conv", {"dw_conv": False}, True),
    "no_dwd_conv": ("w/o DW-D-Conv", {"dwd_conv": False}, True),
    # Fig. 3(b): the LKA branch's output is used directly, no product with the input
    "no_attention": ("w/o Attention", {"combine": "none"}, True),
    # Fig. 3(c): the product with the input becomes a sum
    "attention_add": ("w/o Attention (add)", {"combine": "add"}, True),
    "no_pw_conv": ("w/o 1x1 Conv", {"pw_conv": False}, True),
    "sigmoid": ("w/ Sigmoid", {"gate": "sigmoid"}, True),
    "no_sigmoid": (None, {}, True),  # the paper's LKA, its gate named explicitly
    "dense_conv": ("w/ (21x21 Conv)", {"dense": True}, True),
    # the kernel-size table: K with the d it prints (the Eq. 3 minimiser)
    "k7": ("K=7", {"kernel_size": 7, "dilation": 2}, True),
    "k14": ("K=14", {"kernel_size": 14, "dilation": 3}, True),
    "k21": ("K=21", {}, True),
    "k28": ("K=28", {"kernel_size": 28, "dilation": 4}, True),
    "no_layer_scale": (None, {}, False),  # the LayerScale table's "without"
}
PRINTED = {row.ablation: row for row in paper.TABLE3 + paper.KERNEL_TABLE}


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def job(*overrides: str):
    return validate(compose_cfg(*overrides), ablations_from_overrides(overrides))


def resolved(spec: LKASpec) -> dict:
    return {k: v for k, v in spec.to_dict().items() if k != "dilation"}


def built(spec: LKASpec) -> dict:
    """The LKA a spec builds, in PAPER_LKA's terms (``dilation`` the one built)."""
    fields = dataclasses.asdict(spec)
    return fields | {"dilation": spec.resolved_dilation}


def test_every_issue_ablation_has_a_yaml_file():
    names = set(ablation_names())
    assert (
        names
        == set(PAPER_ROWS)
        == {
            *("baseline", "no_sigmoid", "sigmoid", "no_dw_conv", "no_dwd_conv", "no_pw_conv"),
            *("no_attention", "attention_add", "dense_conv", "k7", "k14", "k21", "k28"),
            "no_layer_scale",
        }
    )


@pytest.mark.parametrize("ablation", sorted(PAPER_ROWS))
def test_ablation_composes_the_lka_its_paper_row_defines(ablation):
    _, differs, layer_scale = PAPER_ROWS[ablation]
    cfg = job("model=van_b0", f"+ablation={ablation}")
    assert built(cfg.lka) == PAPER_LKA | differs
    assert cfg.model.layer_scale is layer_scale


def test_each_printed_row_is_built_by_the_ablation_the_paper_defines_for_it():
    rows = paper.TABLE3 + paper.KERNEL_TABLE
    want = {label: name for name, (label, _, _) in PAPER_ROWS.items() if label is not None}
    assert {row.label: row.ablation for row in rows} == want
    for row in rows:
        _, differs, layer_scale = PAPER_ROWS[row.ablation]
        assert built(row.lka) == PAPER_LKA | differs, row.label
        assert row.layer_scale is layer_scale


@pytest.mark.parametrize("ablation", sorted(set(PAPER_ROWS) - {"dense_conv"}))
def test_ablation_builds_the_van_b0_of_its_paper_row(ablation):
    cfg = job("model=van_b0", f"+ablation={ablation}")
    layer_scale = PAPER_ROWS[ablation][2]
    model = timm.create_model(
        "van_b0", lka=cfg.lka, layer_scale=cfg.model.layer_scale, num_classes=1000
    )
    assert model.lka == cfg.lka
    assert (model.block1[0].layer_scale_1 is not None) is layer_scale
    if ablation in PRINTED:  # the printed Params of Table 3 / the kernel-size table
        printed = PRINTED[ablation]
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert paper.paper_round(params, printed.params_decimals) == printed.params


def test_dense_conv_ablation_builds_one_dense_conv_with_the_printed_params():
    cfg = job("model=van_b0", "+ablation=dense_conv")
    model = timm.create_model("van_b0", lka=cfg.lka, num_classes=1000)
    lka = model.block1[0].attn.spatial_gating_unit
    assert lka.conv0.groups == 1 and lka.conv0.kernel_size == (21, 21)
    assert lka.conv_spatial is None and lka.conv1 is None
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert paper.paper_round(params, 1) == PRINTED["dense_conv"].params == 124.7


def test_ablations_compose_in_a_list():
    spec = job("+ablation=[no_dw_conv,sigmoid]").lka
    assert (spec.dw_conv, spec.dwd_conv, spec.gate) == (False, True, "sigmoid")


def test_ablations_setting_a_switch_differently_are_refused_naming_both():
    with pytest.raises(ConfigError, match=r"k7 .*kernel_size=7.* k14 .*kernel_size=14"):
        job("+ablation=[k7,k14]")
    with pytest.raises(ConfigError, match="no_sigmoid .*gate=none.* sigmoid .*gate=sigmoid"):
        job("+ablation=[no_sigmoid,sigmoid]")


def test_ablations_agreeing_on_a_switch_compose():
    assert job("+ablation=[baseline,no_sigmoid,k21]").lka.kernel_size == 21


def test_any_lka_field_is_settable_directly_and_beats_an_ablation():
    spec = job("+ablation=k7", "lka.kernel_size=35", "lka.dilation=5").lka
    assert (spec.kernel_size, spec.resolved_dilation, spec.dw_kernel, spec.dwd_kernel) == (
        35,
        5,
        9,
        7,
    )


def test_default_config_is_the_cpu_proxy_with_the_paper_lka():
    cfg = job()
    assert cfg.model.name == "van_proxy" and cfg.data.name == "builtin"
    assert cfg.logger.name == "wandb" and cfg.objective == ["best.val_top1"]
    assert resolved(cfg.lka) == resolved(LKASpec())


def test_train_paper_is_the_official_recipe():
    t = job("train=paper").train
    r = paper.RECIPE
    assert (t.epochs, t.cooldown_epochs) == (r["epochs"], r["schedule"]["cooldown_epochs"])
    assert (t.opt, t.lr, t.weight_decay) == ("adamw", r["optimizer"]["lr"], 0.05)
    assert global_batch_steps(t, world_size=1) == (r["global_batch"], 8)
    assert global_batch_steps(t, world_size=8) == (1024, 1)
    assert scaled_lr(t, 1024) == r["optimizer"]["lr"]
    assert (t.sched, t.warmup_epochs) == ("cosine", r["schedule"]["warmup_epochs"])
    assert (t.warmup_lr, t.min_lr) == (r["schedule"]["warmup_lr"], r["schedule"]["min_lr"])
    aug = r["augmentation"]
    assert (t.mixup, t.cutmix, t.mixup_switch_prob) == (
        aug["mixup"],
        aug["cutmix"],
        aug["mixup_switch_prob"],
    )
    assert t.label_smoothing == aug["label_smoothing"]
    assert (t.precision, t.ema, t.clip_grad) == ("fp32", False, None)


@pytest.mark.parametrize("name", [n for n in paper.FIGURES["models"] if n.startswith("van_b")])
def test_model_groups_carry_the_official_per_model_drop_path(name):
    cfg = job(f"model={name}", "train=paper")
    spec = ModelSpec.from_config(cfg.model, cfg.lka, num_classes=1000, img_size=224)
    assert spec.drop_path_rate == paper.FIGURES["models"][name]["drop_path"]


def test_lr_follows_the_global_batch_linearly():
    t = TrainConfig(lr=1e-3, lr_base_batch=1024, batch_size=64, global_batch=256)
    assert global_batch_steps(t, world_size=2) == (256, 2)
    assert scaled_lr(t, 256) == pytest.approx(2.5e-4)
    with pytest.raises(ConfigError, match="train.global_batch=100: must be a multiple of"):
        global_batch_steps(dataclasses.replace(t, global_batch=100), world_size=1)
