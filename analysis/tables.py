"""The paper's tables regenerated from runs: Table 3, the kernel-size table, the LayerScale table.

Each table of :mod:`analysis.registry` (Sec. 4.2-4.3 of "Visual Attention Network") is filled by
runs matched to its rows by what they built, not by what they were called: the LKA spec with the
dilation resolved, LayerScale on or off, and for the LayerScale table the model. So
``+ablation=k21``, ``+ablation=baseline`` and ``+ablation=no_sigmoid`` all land on the paper's
VAN-B0 row. Runs are pooled over seeds (runs repeating a seed are averaged first) only within
one run group: one study (runs outside any study are their own group), model, architecture,
data, image size and training recipe. A study's group is in a table when it fills two of the
table's rows or more (it compares what the table compares: the baseline every study has is not
Table 3); runs outside any study are in every table they fill a row of. Each such group gets the
whole table in the paper's row order, and a row without completed runs says ``missing``. Each
row carries its 95 % interval over seeds and its difference from the group's baseline with
Welch's test (:mod:`analysis.stats`), and :func:`summary` counts the rows that differ and those
in the paper's direction. :func:`runs_in_no_table` are the runs the tables leave out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from van_ablate.analysis import stats
from van_ablate.analysis.registry import TABLES, ReportTable
from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKASpec
from van_ablate.paper import PaperRow
from van_ablate.sweep.adaptive import AdaptiveSampler, Rule, row_status

METRICS = {"best": "best_top1", "final": "final_top1"}
#: What runs must share to be pooled; ``study`` is "" for runs made outside any study.
GROUP = ["study", "model", "arch", "data", "img_size", "recipe"]
#: A study's group is in a table when it fills this many of the table's rows.
STUDY_ROWS_MIN = 2

TOP1_RANGE = (0.0, 100.0)  # top-1 in percent: the bounds of its betting interval

#: Columns of :func:`build_table`; params in M, MACs/FLOPs in G, top-1 in percent. ``delta_*``,
#: ``p_value`` and ``significant`` are the paired comparison over shared seeds (the primary
#: test); ``welch_*`` the unpaired one beside it; ``decided`` says whether the paired interval
#: settles the row (:func:`analysis.stats.decision`).
TABLE_COLUMNS = (
    "table", "row", "ablation", "study", "model", "arch", "data", "img_size", "recipe",
    "paper_model", "paper_params_m", "paper_flops_g", "paper_top1", "paper_params_printed",
    "paper_flops_printed", "params_m", "params_counted_m", "macs_g", "macs_counted_g",
    "flops_paper_g", "images_per_sec", "top1_mean", "top1_std", "top1_ci_low", "top1_ci_high",
    "n_runs", "n_seeds", "n_not_completed", "baseline", "delta_baseline", "n_pairs",
    "delta_ci_low", "delta_ci_high", "p_value", "wilcoxon_p", "significant", "decided",
    "welch_delta", "welch_ci_low", "welch_ci_high", "welch_p", "stop", "paper_delta_baseline",
    "agrees_paper", "delta_paper", "same_scale", "missing",
)  # fmt: skip


def report_table(kind: str) -> ReportTable:
    """The registry entry of table ``kind``; a ConfigError naming the tables if there is none."""
    if kind not in TABLES:
        raise ConfigError("table", kind, f"must be one of {', '.join(TABLES)}")
    return TABLES[kind]


def _hits(table: ReportTable, runs: pd.DataFrame) -> tuple[tuple[PaperRow, ...], pd.DataFrame]:
    """The table's rows and the runs that fill them (one line per run and row), of the groups
    the table shows."""
    runs = runs.assign(
        data=runs["data"].fillna(""), study=runs["study_name"].fillna("").astype(str)
    )
    rows = table.rows(sorted(set(runs["model"].dropna())))
    hits = pd.concat(
        [runs[table.match(runs, row)].assign(row=row.label) for row in rows], ignore_index=True
    )
    filled = hits.groupby(GROUP, dropna=False)["row"].nunique().rename("filled").reset_index()
    shown = filled[(filled["study"] == "") | (filled["filled"] >= STUDY_ROWS_MIN)]
    hits = hits.merge(shown[GROUP], on=GROUP)
    # a per-model table has no rows for a model whose runs are all in groups it does not show
    return table.rows(sorted(set(hits["model"].dropna()))), hits


def runs_in_no_table(kinds: Iterable[str], runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that fill no row of tables ``kinds``: a search's trials, a grid's points off the
    paper's rows, another study's baseline."""
    shown = set()
    for kind in kinds:
        shown.update(_hits(report_table(kind), runs)[1]["run_id"])
    return runs[~runs["run_id"].isin(shown)]


def build_table(kind: str, runs: pd.DataFrame, metric: str = "best") -> pd.DataFrame:
    """One line per (run group, paper row) of table ``kind``, the paper's values beside ours.

    >>> build_table("table3", load_runs(["runs"]).runs)  # doctest: +SKIP
    """
    table = report_table(kind)
    rows, hits = _hits(table, runs)
    groups = [tuple(k) for k in hits[GROUP].drop_duplicates().itertuples(index=False)]
    groups.sort(key=str)
    if table.per_model:  # each row with the groups of its model
        model = GROUP.index("model")
        pairs = [(r, g) for r in rows for g in [g for g in groups if g[model] == r.model] or [None]]
    else:  # the whole table, in the paper's order, once per group
        pairs = [(r, g) for g in groups or [None] for r in rows]
    # with no runs at all, the columns _stats would give (its index on an empty frame)
    stats = pd.DataFrame(columns=["row", *GROUP, *_stats(hits.iloc[:0], METRICS[metric]).index])
    if not hits.empty:
        by = hits.groupby(["row", *GROUP], dropna=False, sort=False)
        stats = by.apply(_stats, metric=METRICS[metric], include_groups=False).reset_index()
    skeleton = pd.DataFrame([_skeleton(table, r, g) for r, g in pairs])
    table = skeleton.merge(stats, on=["row", *GROUP], how="left")
    table["n_runs"] = table["n_runs"].fillna(0).astype(int)
    table["n_seeds"] = table["n_seeds"].fillna(0).astype(int)
    table["n_not_completed"] = table["n_not_completed"].fillna(0).astype(int)
    table["missing"] = table["n_runs"] == 0
    table["same_scale"] = (
        (table["model"] == table["paper_model"])
        & (table["data"] == "imagenet")
        & (table["img_size"] == 224)
    )
    table = _deltas(table, rows)
    table["stop"] = _stops(table, hits)
    return table[list(TABLE_COLUMNS)]


def _skeleton(table: ReportTable, row: PaperRow, group: tuple | None) -> dict:
    keys = dict(zip(GROUP, group, strict=True)) if group else dict(_EMPTY_GROUP)
    if group is None and table.per_model:
        keys["model"] = row.model
    return {
        "table": table.name,
        "row": row.label,
        "ablation": row.ablation,
        **keys,
        "paper_model": row.model,
        "paper_params_m": row.params,
        "paper_flops_g": row.flops,
        "paper_top1": row.top1,
        "paper_params_printed": _printed(row.params, row.params_decimals),
        "paper_flops_printed": _printed(row.flops, row.flops_decimals),
    }


def _printed(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


_EMPTY_GROUP = {
    "study": "",
    "model": None,
    "arch": "",
    "data": "",
    "img_size": math.nan,
    "recipe": "",
}


def _stats(runs: pd.DataFrame, metric: str) -> pd.Series:
    done = runs[runs["status"] == "completed"]
    # one value per seed: runs repeating a seed (the same grid point in two studies) are
    # averaged first, so they do not count as extra evidence
    top1 = done.groupby("seed")[metric].mean().astype(float)
    ci = stats.betting_ci(top1.to_numpy(), *TOP1_RANGE)
    if len(top1) < 2:  # one seed bounds nothing: shown, without an interval (no conclusion)
        ci = stats.Interval(ci.mean, math.nan, math.nan, len(top1))
    first = done.iloc[0] if len(done) else None
    return pd.Series(
        {
            "params_m": _scaled(first, "params", 1e6),
            "params_counted_m": _scaled(first, "params_counted", 1e6),
            "macs_g": _scaled(first, "macs", 1e9),
            "macs_counted_g": _scaled(first, "macs_counted", 1e9),
            "flops_paper_g": _scaled(first, "flops_paper", 1e9),
            "images_per_sec": done["images_per_sec"].astype(float).mean(),
            "top1_mean": ci.mean,
            "top1_std": top1.std() if len(top1) > 1 else math.nan,
            "top1_ci_low": ci.low,
            "top1_ci_high": ci.high,
            "top1_seeds": top1.to_dict(),
            "n_runs": len(done),
            "n_seeds": len(top1),
            "n_not_completed": len(runs) - len(done),
        }
    )


def _deltas(table: pd.DataFrame, rows: Sequence[PaperRow]) -> pd.DataFrame:
    """Δ to the baseline row of the same group (and model), ours with its interval and Welch's
    test, and the paper's; whether ours has the paper's sign; Δ to paper."""
    keys = [*GROUP, "paper_model"]
    table["baseline"] = table["row"].isin(
        {r.label for r in rows if r.lka == LKASpec() and r.layer_scale}
    )
    base = table[table["baseline"]]
    base = base[[*keys, "top1_mean", "top1_seeds", "paper_top1"]].rename(
        columns={"top1_mean": "base_top1", "top1_seeds": "base_seeds", "paper_top1": "paper_base"}
    )
    table = table.merge(base, on=keys, how="left")
    table["paper_delta_baseline"] = table["paper_top1"] - table["paper_base"]
    tests = [_compare(r) for _, r in table.iterrows()]
    # the mean per-seed Δ over shared seeds, the centre of the paired interval beside it; the
    # difference of the two means where no seed is shared (Welch's centre, welch_delta)
    table["delta_baseline"] = [p.delta if p.n else w.delta for p, w in tests]
    table["welch_delta"] = [w.delta for _, w in tests]
    table["n_pairs"] = [p.n for p, _ in tests]
    table["delta_ci_low"] = [p.low for p, _ in tests]
    table["delta_ci_high"] = [p.high for p, _ in tests]
    table["p_value"] = [p.p_value for p, _ in tests]
    table["wilcoxon_p"] = [p.wilcoxon_p for p, _ in tests]
    # a bool where a test was made, else None (under 2 shared seeds: no conclusion)
    table["significant"] = [None if math.isnan(p.p_value) else p.significant for p, _ in tests]
    table["decided"] = [stats.decision(p) for p, _ in tests]
    table["welch_ci_low"] = [w.low for _, w in tests]
    table["welch_ci_high"] = [w.high for _, w in tests]
    table["welch_p"] = [w.p_value for _, w in tests]
    pairs = zip(table["delta_baseline"], table["paper_delta_baseline"], strict=True)
    table["agrees_paper"] = [stats.agrees(d, p) for d, p in pairs]
    table["delta_paper"] = table["top1_mean"] - table["paper_top1"]
    return table


def _compare(row: pd.Series) -> tuple[stats.PairedComparison, stats.Comparison]:
    """The paired comparison over shared seeds and Welch's unpaired one, row minus baseline."""
    ours, base = row["top1_seeds"], row["base_seeds"]
    none = math.nan
    if row["baseline"] and isinstance(ours, dict) and ours:  # no test of a row against itself
        return stats.PairedComparison(0.0, none, none, none, none, 0), stats.Comparison(
            0.0, none, none, none
        )
    if not isinstance(ours, dict) or not isinstance(base, dict) or not ours or not base:
        return stats.PairedComparison(none, none, none, none, none, 0), stats.Comparison(
            none, none, none, none
        )
    return stats.paired(ours, base), stats.welch(list(ours.values()), list(base.values()))


def _stops(table: pd.DataFrame, hits: pd.DataFrame) -> list[str | None]:
    """Why each row of an adaptive study stopped taking seeds (its sampler's rule, read from the
    study's ``multirun.yaml``, over the seeds the table holds): decided, precise, max seeds,
    budget (the study's trials ran out first), or open (the study is still running); None for
    rows of other studies."""
    stops: list[str | None] = [None] * len(table)
    for study, group in table.groupby("study", sort=False):
        settings = _adaptive_settings(hits[hits["study"] == study]) if study else None
        base = group[group["baseline"]]
        if settings is None or base.empty:
            continue
        # a row still open once a sweep process has ended (it writes its summary last) was
        # stopped by the study's budget; before that, it is open
        ended = settings.pop("ended")
        records = [
            (r["row"], seed, value, "COMPLETE")
            for _, r in group.iterrows()
            if isinstance(r["top1_seeds"], dict)
            for seed, value in r["top1_seeds"].items()
        ]
        rule = Rule(rows=tuple(group["row"]), baseline=base["row"].iloc[0], **settings)
        status = row_status(records, rule)
        for i, (_, r) in zip(group.index, group.iterrows(), strict=True):
            if r["row"] in status and not r["missing"]:
                stops[table.index.get_loc(i)] = status[r["row"]].stop or (
                    "budget" if ended else "open"
                )
    return stops


def _adaptive_settings(runs: pd.DataFrame) -> dict | None:
    """The adaptive sampler's settings of the study the runs came from (its sweep folder's
    ``multirun.yaml``, two levels above a run's results.json), or None."""
    for path in runs["path"].dropna().unique()[:1]:
        config = Path(str(path)).parent.parent / "multirun.yaml"
        if not config.is_file():
            return None
        node = OmegaConf.select(OmegaConf.load(config), "hydra.sweeper.sampler") or {}
        if str(node.get("_target_", "")).endswith(AdaptiveSampler.__name__):
            fields = {f.name for f in dataclasses.fields(Rule)} - {"rows", "baseline"}
            settings = {k: v for k, v in OmegaConf.to_container(node).items() if k in fields}
            return {**settings, "ended": (config.parent / "optimization_results.yaml").exists()}
    return None


def summary(table: pd.DataFrame) -> list[str]:
    """One line per run group: how many rows differ from our baseline, how many in the paper's
    direction, and how many draw no conclusion.

    >>> summary(build_table("table3", load_runs(["runs"]).runs))  # doctest: +SKIP
    ['van_proxy builtin@64: 5 of 7 rows decided (paired t-test over shared seeds, 95 %): ...']
    """
    lines = []
    for _, group in table.groupby(GROUP, dropna=False, sort=False):
        if group["missing"].all():
            continue
        rows = group[~group["missing"] & ~group["baseline"]]
        tested = rows[rows["significant"].notna()]
        differ = tested[tested["decided"] == stats.DIFFERS]
        same = tested[tested["decided"] == stats.EQUIVALENT]
        agree = differ["agrees_paper"].eq(True).sum()
        directed = differ["agrees_paper"].notna().sum()
        line = (
            f"{_group_name(group.iloc[0])}: {len(differ) + len(same)} of {len(tested)} rows "
            f"decided ({stats.TEST} over shared seeds, 95 %): {len(differ)} differ from the "
            f"baseline, {len(same)} lie within ±{stats.EQUIVALENCE:g} points of it; {agree} of "
            f"those that differ in the paper's direction ({directed} with a paper Δ of at least "
            f"{stats.PAPER_DELTA_MIN:g} points)"
        )
        if len(rows) > len(tested):
            line += (
                f"; {len(rows) - len(tested)} rows with fewer than 2 shared seeds draw no "
                "conclusion"
            )
        lines.append(line)
    return lines


def _group_name(row: pd.Series) -> str:
    name = str(row["model"])
    if row["data"]:
        name += f" {row['data']}@{row['img_size']:g}"
    return f"study {row['study']}, {name}" if row["study"] else name


def _scaled(first: pd.Series | None, col: str, unit: float) -> float:
    if first is None or pd.isna(first[col]):
        return math.nan
    return float(first[col]) / unit
