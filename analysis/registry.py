"""The report's tables, one entry each: Table 3, the kernel-size table and the LayerScale table.

An entry is all a report needs to know of a table of "Visual Attention Network" (Sec. 4.2-4.3):
its name (the report command and its file names), its title, its rows in the paper's order (the
printed figures and the ablation behind each row come from :mod:`van_ablate.paper`), how a run
fills a row, and the figures its report draws. :mod:`analysis.tables`, :mod:`analysis.render` and
:mod:`analysis.report` read the entries and nothing else, so a new table is its printed rows in
:mod:`van_ablate.paper` and one entry here::

    from van_ablate.analysis.registry import TABLES
    TABLES["kernel"].title                 # 'Kernel size K of LKA'
    [r.label for r in TABLES["kernel"].rows(())]   # ['K=7', 'K=14', 'K=21', 'K=28']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pandas as pd

from van_ablate import paper
from van_ablate.analysis.collect import SPEC_COLUMNS, spec_columns
from van_ablate.model.lka import LKASpec
from van_ablate.paper import PaperRow

__all__ = ["TABLES", "ReportTable", "layer_scale_rows", "same_lka", "same_lka_and_model"]


@dataclasses.dataclass(frozen=True)
class ReportTable:
    """One table of the report.

    ``rows(models)`` gives the rows in the paper's order; ``models`` are those of the runs the
    table shows (a table of the paper's own models may add rows for ours). ``match(runs, row)`` is
    the mask of the runs that fill ``row``. With ``per_model`` every row belongs to its model and
    is shown with that model's runs only; otherwise each run group gets the whole table.
    ``figures`` are the figures a report of this table draws (:data:`analysis.report.FIGURES`).
    """

    name: str
    title: str
    rows: Callable[[Sequence[str]], tuple[PaperRow, ...]]
    match: Callable[[pd.DataFrame, PaperRow], pd.Series]
    figures: tuple[str, ...]
    per_model: bool = False


def same_lka(runs: pd.DataFrame, row: PaperRow) -> pd.Series:
    """Runs that built the row's LKA (every :data:`SPEC_COLUMNS` switch, the dilation resolved)
    with its LayerScale, whatever their model: ``+ablation=k21`` fills the VAN-B0 row."""
    want = spec_columns(row.lka)
    mask = runs["layer_scale"].astype(bool) == row.layer_scale
    for col in SPEC_COLUMNS:
        mask &= runs[col] == want[col]
    return mask


def same_lka_and_model(runs: pd.DataFrame, row: PaperRow) -> pd.Series:
    """:func:`same_lka`, of the row's model only."""
    return same_lka(runs, row) & (runs["model"] == row.model)


def layer_scale_rows(models: Sequence[str]) -> tuple[PaperRow, ...]:
    """A w/ and a w/o LayerScale row per model of the paper, then per other model in ``models``
    (such as van_proxy), whose paper columns are empty.

    >>> [r.label for r in layer_scale_rows(["van_proxy"])][-2:]
    ['van_proxy w/ LayerScale', 'van_proxy w/o LayerScale']
    """
    printed = {r.model: r for r in paper.LAYER_SCALE_TABLE}
    rows = []
    for model in [*printed, *sorted(set(models) - set(printed))]:
        ref, ls = paper.MODELS.get(model), printed.get(model)
        for on in (True, False):
            rows.append(
                PaperRow(
                    label=f"{model} {'w/' if on else 'w/o'} LayerScale",
                    ablation="baseline" if on else "no_layer_scale",
                    model=model,
                    lka=LKASpec(),
                    layer_scale=on,
                    params=ref.params if ref else None,
                    flops=ref.flops if ref else None,
                    top1=None if ls is None else ls.top1_with if on else ls.top1_without,
                    params_decimals=ref.params_decimals if ref else 1,
                    flops_decimals=ref.flops_decimals if ref else 1,
                )
            )
    return tuple(rows)


#: The report's tables by name, in the order a report of them all writes them.
TABLES: dict[str, ReportTable] = {
    t.name: t
    for t in (
        ReportTable(
            "table3",
            "Table 3: LKA components",
            rows=lambda models: paper.TABLE3,
            match=same_lka,
            figures=("pareto", "speed", "curves"),
        ),
        ReportTable(
            "kernel",
            "Kernel size K of LKA",
            rows=lambda models: paper.KERNEL_TABLE,
            match=same_lka,
            figures=("kernel_size", "curves"),
        ),
        ReportTable(
            "layer_scale",
            "LayerScale",
            rows=layer_scale_rows,
            match=same_lka_and_model,
            figures=("curves",),
            per_model=True,
        ),
    )
}
