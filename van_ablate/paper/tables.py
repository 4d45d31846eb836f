"""The paper's Params and FLOPs beside ours: ``python -m van_ablate.complexity``.

Prints Table 3, the kernel-size table and the model table of "Visual Attention Network"
(Guo et al. 2022) with, for each row, the figure the paper prints, the closed form
(:func:`~van_ablate.model.complexity.van_cost`) and the fvcore count
(:func:`~van_ablate.model.complexity.count_cost`), as Markdown, CSV or JSON; a composed model and
LKA (``--model``, ``--lka.*``) is added as one more row, next to its paper row if it has one.
The conventions are those of :mod:`van_ablate.model.complexity`; its ``-m`` entry point runs main().
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from van_ablate import checks, paper
from van_ablate.cli_args import OneLineParser, add_model_arguments, model_from_args, overrides_given
from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.model.complexity import Cost
from van_ablate.model.lka import LKASpec
from van_ablate.model.spec import ModelSpec
from van_ablate.paper import PaperRow, paper_round

__all__ = ["compare_rows", "main", "render"]

TABLES = ("table3", "kernel", "models", "all")
FORMATS = ("markdown", "csv", "json")
COUNT_MODES = ("auto", "all", "none")
# Under --count auto, models above this many paper FLOPs are given in closed form only: counting
# VAN-B4..B6 runs their full forward pass, 20 s of CPU that would break the 1-minute budget.
AUTO_COUNT_MAX_FLOPS = 10**10
CONVENTIONS = {
    "params": "all parameters (weights, biases, norm affines, LayerScale)",
    "flops": "paper convention (mmcv): conv+linear multiply-adds + conv-bias adds + 2 per "
    "BatchNorm and LayerNorm element",
    "macs": "conv+linear multiply-adds, one multiply-add = one FLOP (fvcore's convention)",
    "closed": "closed form from the config (van_cost)",
    "counted": "fvcore on the built model, with handles for the same convention (count_cost); "
    "blank where --count auto left a model above 10 G to the closed form",
    "match": "the closed form, rounded as the paper prints, equals the paper's figure",
}


def _spec_key(spec: LKASpec) -> tuple:
    return tuple(v for k, v in spec.to_dict().items() if k != "dilation")


def _paper_rows(table: str) -> list[tuple[str, PaperRow]]:
    tables = {
        "table3": paper.TABLE3,
        "kernel": paper.KERNEL_TABLE,
        "models": tuple(paper.MODELS.values()),
    }
    names = list(tables) if table == "all" else [table]
    return [(name, row) for name in names for row in tables[name]]


def _find_paper_row(spec: ModelSpec) -> PaperRow | None:
    if spec.changed_arch() or not spec.layer_scale or spec.num_classes != 1000:
        return None
    for _, row in _paper_rows("all"):
        if row.model == spec.name and row.layer_scale and _spec_key(row.lka) == _spec_key(spec.lka):
            return row
    return None


@functools.cache
def _counted(spec: ModelSpec) -> Cost:
    return spec.counted_cost()


def _should_count(mode: str, table: str, closed: Cost) -> bool:
    if mode == "none":
        return False
    if mode == "all" or table in ("table3", "kernel"):
        return True
    return closed.flops_paper <= AUTO_COUNT_MAX_FLOPS


def compare_rows(
    rows: Sequence[tuple[str, str, ModelSpec, PaperRow | None]],
    count: str = "all",
) -> list[dict[str, Any]]:
    """Paper, closed-form and counted figures for ``(table, label, model_spec, paper_row)``.

    ``count`` is ``all``, ``none`` or ``auto`` (every ablation row, other rows up to
    ``AUTO_COUNT_MAX_FLOPS``). Paper FLOPs are given only at 224, where the paper measured
    them; ``matches_paper`` is None where there is nothing to compare.
    """
    checks.one_of("count", count, COUNT_MODES)
    records = []
    for table, label, spec, printed in rows:
        closed = spec.closed_cost()
        counted = _counted(spec) if _should_count(count, table, closed) else None
        flops_printed = printed.flops if printed is not None and spec.img_size == 224 else None
        match = None
        if printed is not None:
            match = paper_round(closed.params / 1e6, printed.params_decimals) == printed.params
            if flops_printed is not None:
                flops = paper_round(closed.flops_paper / 1e9, printed.flops_decimals)
                match = match and flops == flops_printed
        records.append(
            {
                "table": table,
                "row": label,
                "model": spec.name,
                "ablation": printed.ablation if printed is not None else None,
                "params_printed": printed.params if printed is not None else None,
                "params": closed.params,
                "params_counted": counted.params if counted else None,
                "flops_printed": flops_printed,
                "flops_paper": closed.flops_paper,
                "flops_paper_counted": counted.flops_paper if counted else None,
                "macs": closed.macs,
                "macs_counted": counted.macs if counted else None,
                "matches_paper": match,
                "params_decimals": printed.params_decimals if printed is not None else 1,
                "flops_decimals": printed.flops_decimals if printed is not None else 1,
            }
        )
    return records


def _markdown(records: list[dict[str, Any]], img_size: int) -> str:
    def fixed(value: float | None, decimals: int) -> str:
        return "" if value is None else f"{value:.{decimals}f}"

    def scaled(value: int | None, unit: float) -> str:
        return "" if value is None else f"{value / unit:.4f}"

    table = pd.DataFrame(
        {
            "table": r["table"],
            "row": r["row"],
            "ablation": r["ablation"] or "",
            "Params paper (M)": fixed(r["params_printed"], r["params_decimals"]),
            "Params closed": scaled(r["params"], 1e6),
            "Params counted": scaled(r["params_counted"], 1e6),
            "FLOPs paper (G)": fixed(r["flops_printed"], r["flops_decimals"]),
            "FLOPs closed": scaled(r["flops_paper"], 1e9),
            "FLOPs counted": scaled(r["flops_paper_counted"], 1e9),
            "MACs closed": scaled(r["macs"], 1e9),
            "match": {True: "yes", False: "NO", None: ""}[r["matches_paper"]],
        }
        for r in records
    )
    legend = [f"Input {img_size}x{img_size}, one image."]
    legend += [f"- {name}: {text}" for name, text in CONVENTIONS.items()]
    legend += [
        f"- NO on {r['table']} {r['row']}: the paper prints {r['params_printed']} M and "
        f"{r['flops_printed']} G; the closed form is {r['params'] / 1e6:.4f} M and "
        f"{r['flops_paper'] / 1e9:.4f} G"
        for r in records
        if r["matches_paper"] is False
    ]
    return table.to_markdown(index=False, disable_numparse=True) + "\n\n" + "\n".join(legend)


def render(records: list[dict[str, Any]], fmt: str, img_size: int) -> str:
    """The comparison as a Markdown table with a legend, CSV, or JSON with the conventions."""
    if fmt == "markdown":
        return _markdown(records, img_size)
    if fmt == "csv":
        return pd.DataFrame(records).to_csv(index=False)
    payload = {"img_size": img_size, "conventions": CONVENTIONS, "rows": records}
    return json.dumps(payload, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m van_ablate.complexity``: the paper's Params/FLOPs beside ours."""
    parser = OneLineParser(
        prog="python -m van_ablate.complexity",
        description="Params and FLOPs of the paper's tables (Table 3, kernel size, models) and "
        "of any composed VAN, as paper / closed form / fvcore count.",
    )
    parser.add_argument("--table", choices=TABLES, help="paper table(s) to print")
    add_model_arguments(parser)
    parser.add_argument("--format", choices=FORMATS, default="markdown")
    parser.add_argument(
        "--count",
        choices=COUNT_MODES,
        default="auto",
        help="fvcore counts: auto (every ablation row, other models up to 10 G), all, none",
    )
    args = parser.parse_args(argv)
    # The count's forward pass is one image; one thread keeps a shared 2-core CPU from thrashing.
    torch.set_num_threads(1)
    try:
        composed = model_from_args(args)  # checks every key and value before any work
        given = {key.split(".")[0] for key in overrides_given(args)}
        rows = []
        if args.table or not given & {"model", "lka"}:
            for t, r in _paper_rows(args.table or "all"):
                spec = ModelSpec(r.model, r.lka, r.layer_scale, img_size=composed.img_size)
                rows.append((t, r.label, spec, r))
        if given & {"model", "lka"}:
            rows.append(("composed", composed.name, composed, _find_paper_row(composed)))
        records = compare_rows(rows, count=args.count)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(render(records, args.format, composed.img_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
