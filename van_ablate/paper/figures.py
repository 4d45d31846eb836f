"""The paper's printed figures, and the LKA spec and ablation behind every ablation row.

Loads ``figures.yaml`` beside it, a verbatim copy of the reference figures of "Visual Attention
Network" (Guo et al. 2022): Table 3 (LKA components), the kernel-size table, the LayerScale
table, the model table (Table 2 sizes) and the official training recipe. This module is the one
place that says which row is which ablation; what an ablation switches is said once, in its
``conf/ablation/<ablation>.yaml`` (read through :mod:`van_ablate.paper.ablation`). The complexity
tables and the reports import it::

    from van_ablate import paper
    row = paper.TABLE3[0]          # PaperRow(label='w/o DW-Conv', ablation='no_dw_conv', ...)
    paper.ABLATIONS["k7"]["lka"]   # LKASpec(kernel_size=7, ...)
"""

from __future__ import annotations

import dataclasses
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import Any

import yaml

from van_ablate.model.lka import LKASpec
from van_ablate.paper.ablation import ablation_model

__all__ = [
    "FIGURES",
    "KERNEL_TABLE",
    "LAYER_SCALE_TABLE",
    "MODELS",
    "ABLATIONS",
    "RECIPE",
    "TABLE3",
    "THROUGHPUT",
    "LayerScaleRow",
    "PaperRow",
    "paper_round",
]

FIGURES: dict[str, Any] = yaml.safe_load(
    resources.files("van_ablate.paper").joinpath("figures.yaml").read_text(encoding="utf-8")
)

# Table 3 row label -> the ablation that builds it (conf/ablation/<ablation>.yaml says how).
_TABLE3_ABLATIONS: dict[str, str] = {
    "w/o DW-Conv": "no_dw_conv",
    "w/o DW-D-Conv": "no_dwd_conv",
    "w/o Attention": "no_attention",
    "w/o Attention (add)": "attention_add",
    "w/o 1x1 Conv": "no_pw_conv",
    "w/ Sigmoid": "sigmoid",
    "w/ (21x21 Conv)": "dense_conv",
    "VAN-B0": "baseline",
}


@dataclasses.dataclass(frozen=True)
class PaperRow:
    """One printed row: our ablation and model for it, and the paper's Params, FLOPs and top-1.

    ``params`` is in millions and ``flops`` in G multiply-adds (paper convention), both as
    printed with ``params_decimals`` / ``flops_decimals`` digits; ``top1`` is None where the
    paper gives no ImageNet-1K figure. ``ablation`` is None for the model table.
    """

    label: str
    ablation: str | None
    model: str
    lka: LKASpec
    layer_scale: bool
    params: float
    flops: float
    top1: float | None
    params_decimals: int
    flops_decimals: int


@dataclasses.dataclass(frozen=True)
class LayerScaleRow:
    """Top-1 with and without LayerScale; params and FLOPs are the model's own."""

    model: str
    top1_with: float
    top1_without: float


def paper_round(value: float, decimals: int) -> float:
    """Round half up, as printed tables do (Python's ``round`` rounds halves to even).

    >>> paper_round(0.885, 2), round(0.125, 2), paper_round(0.125, 2)
    (0.89, 0.12, 0.13)
    """
    quantum = Decimal(1).scaleb(-decimals)
    return float(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def _decimals(printed: int | float) -> int:
    return 0 if isinstance(printed, int) else 1


def _row(
    label: str,
    ablation: str | None,
    model: str,
    printed: dict[str, Any],
    decimals: int | None = None,
) -> PaperRow:
    lka, layer_scale = (LKASpec(), True) if ablation is None else ablation_model(ablation)
    return PaperRow(
        label=label,
        ablation=ablation,
        model=model,
        lka=lka,
        layer_scale=layer_scale,
        params=printed["params"],
        flops=printed["flops"],
        top1=printed.get("top1"),
        params_decimals=_decimals(printed["params"]) if decimals is None else decimals,
        flops_decimals=_decimals(printed["flops"]) if decimals is None else decimals,
    )


def _table3() -> tuple[PaperRow, ...]:
    return tuple(
        _row(r["row"], _TABLE3_ABLATIONS[r["row"]], "van_b0", r, decimals=1)
        for r in FIGURES["table3_lka_components"]
    )


def _kernel_table() -> tuple[PaperRow, ...]:
    return tuple(
        _row(f"K={r['K']}", f"k{r['K']}", "van_b0", r, decimals=2)
        for r in FIGURES["kernel_size_table"]
    )


def _models() -> dict[str, PaperRow]:
    # The model table prints one decimal, except "200" (an int in the YAML) for VAN-B6's params.
    return {
        name: _row(name, None, name, r)
        for name, r in FIGURES["models"].items()
        if isinstance(r, dict)
    }


TABLE3: tuple[PaperRow, ...] = _table3()
KERNEL_TABLE: tuple[PaperRow, ...] = _kernel_table()
MODELS: dict[str, PaperRow] = _models()
LAYER_SCALE_TABLE: tuple[LayerScaleRow, ...] = tuple(
    LayerScaleRow(r["model"], r["with"], r["without"]) for r in FIGURES["layer_scale_table"]
)
RECIPE: dict[str, Any] = FIGURES["imagenet_recipe"]
THROUGHPUT: dict[str, int] = FIGURES["throughput_reported"]

# Ablation name -> what it changes on VAN-B0, for the ablations of the paper's tables.
ABLATIONS: dict[str, dict[str, Any]] = {
    name: dict(zip(("lka", "layer_scale"), ablation_model(name), strict=True))
    for name in [row.ablation for row in TABLE3 + KERNEL_TABLE] + ["no_layer_scale"]
}
