"""Report figures (matplotlib, PNG and SVG): top-1 against K and against MACs, curves, studies.

The kernel-size figure redraws the paper's kernel-size table (Sec. 4.3) as a curve, the MACs figure
puts Table 3's trade-off beside our runs and a study's Pareto front, the curves show each ablation's
validation top-1 over seeds, and a study gets Optuna's own optimisation history and parameter
importances. Each function returns a Figure, or None when its inputs hold nothing to draw.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter
from matplotlib.transforms import Bbox

from van_ablate import paper
from van_ablate.analysis.collect import SPEC_COLUMNS, run_labels, spec_columns
from van_ablate.analysis.stats import mean_ci
from van_ablate.io import atomic_write
from van_ablate.model.lka import LKASpec, auto_dilation

log = logging.getLogger("analysis")
FORMATS = ("png", "svg")
# The paper's LKA in everything but K and d: the runs the kernel-size figure draws.
_DEFAULTS = {
    k: v for k, v in spec_columns(LKASpec()).items() if k not in ("kernel_size", "dilation")
}


# One colour per ablation in every figure, in the paper's order (14 ablations: tab10 would repeat).
ABLATION_COLOURS = {
    name: plt.get_cmap("tab20").colors[i % 20] for i, name in enumerate(paper.ABLATIONS)
}
_OTHER_COLOURS = plt.get_cmap("Dark2").colors  # labels that are not ablations (NAS points)


def colour(label: str, i: int = 0):
    """The ablation's colour (``k7``, ``van_proxy k7``), else the ``i``-th of a second palette."""
    name = str(label).split()[-1] if label else ""
    return ABLATION_COLOURS.get(name, _OTHER_COLOURS[i % len(_OTHER_COLOURS)])


def chance(runs: pd.DataFrame) -> float | None:
    """Top-1 of guessing, in percent, when the runs agree on their number of classes."""
    classes = runs["num_classes"].dropna().unique() if "num_classes" in runs else []
    return 100.0 / float(classes[0]) if len(classes) == 1 and classes[0] > 0 else None


def full_scale(ax, chance_top1: float | None) -> None:
    """y from 0 to 100 % with the chance line: our small runs and the paper's ImageNet figures
    on one honest scale."""
    ax.set_ylim(0, 100)
    if chance_top1 is not None:
        ax.axhline(chance_top1, color="0.4", ls="--", lw=1, label=f"chance ({chance_top1:.4g}%)")


def save(fig: Figure, out_dir: Path, name: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.png`` and ``.svg`` (atomically) and close it."""
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        atomic_write(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=110))
        paths.append(path)
        fig.set_layout_engine("none")  # laid out by the first save; the others reuse it
    plt.close(fig)
    return paths


def top1_vs_kernel(runs: pd.DataFrame, metric: str = "best_top1") -> Figure | None:
    """(a) our top-1 against K per model, d = Eq. 3's choice; (b) Δ to K=21, ours and paper's."""
    done = runs[(runs["status"] == "completed") & runs["layer_scale"].astype(bool)]
    for col, value in _DEFAULTS.items():
        done = done[done[col] == value]
    done = done[done["dilation"] == done["kernel_size"].map(auto_dilation)]
    if done.empty:
        return None
    fig, (ax, dax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for (model, data), group in done.groupby(["model", "data"], dropna=False):
        per_k = group.groupby("kernel_size")[metric]
        stats = per_k.agg(["mean", "count"])
        bars = _bars([mean_ci(x.to_numpy(float)) for _, x in per_k])
        ax.errorbar(
            stats.index,
            stats["mean"],
            yerr=bars,
            marker="o",
            capsize=3,
            label=f"{model} {data} (n={int(stats['count'].sum())}; bars: 95% CI)",
        )
        if 21 in stats.index:
            dax.plot(stats.index, stats["mean"] - stats.loc[21, "mean"], marker="o", label=model)
    k = [r.lka.kernel_size for r in paper.KERNEL_TABLE]
    top1 = np.array([r.top1 for r in paper.KERNEL_TABLE])
    dax.plot(k, top1 - top1[k.index(21)], marker="*", ms=10, color="k", label="paper (VAN-B0)")
    ax.plot(k, top1, marker="*", ms=10, color="k", ls=":", label="paper (VAN-B0, ImageNet)")
    full_scale(ax, chance(done))
    ax.set(xlabel="kernel size K (d by Eq. 3)", ylabel="top-1 (%)", title="Top-1 against K")
    dax.set(xlabel="kernel size K", ylabel="Δ top-1 to K=21 (points)", title="Δ to K=21")
    dax.axhline(0, color="0.7", lw=0.8)
    for a in (ax, dax):
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    return fig


def _bars(intervals: Sequence) -> list[list[float]]:
    """Error bars below and above each mean from its interval's own bounds (an interval that
    keeps to the metric's range need not be symmetric); none under 2 values."""
    below = [i.mean - i.low if i.n > 1 else 0.0 for i in intervals]
    above = [i.high - i.mean if i.n > 1 else 0.0 for i in intervals]
    return [below, above]


def pareto_mask(macs: np.ndarray, top1: np.ndarray) -> np.ndarray:
    """Points no other point beats on both fewer MACs and higher top-1 (2-D, so a sort suffices).

    >>> pareto_mask(np.array([1, 2, 3]), np.array([50.0, 40.0, 60.0])).tolist()
    [True, False, True]
    """
    order = np.lexsort((-top1, macs))
    mask = np.zeros(len(macs), dtype=bool)
    best = -np.inf
    for i in order:
        if top1[i] > best:
            mask[i], best = True, top1[i]
    return mask


# Trials that cannot be on the front: pruned ones ran only some epochs, infeasible ones broke
# the sweep's constraints.
_OFF_FRONT = {
    "pruned": {"marker": "o", "facecolors": "none", "edgecolors": "C1"},
    "infeasible": {"marker": "x", "color": "0.6"},
}


def top1_vs_macs(
    points: pd.DataFrame, title: str = "Top-1 against MACs", chance_top1: float | None = None
) -> Figure | None:
    """(a) our points (``macs``, ``top1``, ``label``, ``kind``) and their front; (b) the paper's.

    The paper's points (Table 3 and kernel-size rows, VAN-B0 on ImageNet, FLOPs as printed) get
    their own panel: at proxy scale ours sit two orders of magnitude lower on the MACs axis.
    """
    points = points.dropna(subset=["macs", "top1"])
    if points.empty:
        return None
    fig, (ax, pax) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    ok = points[points["kind"] == "complete"]
    front = ok[pareto_mask(ok["macs"].to_numpy(float), ok["top1"].to_numpy(float))]
    front = front.sort_values("macs")
    labels = list(dict.fromkeys(ok["label"]))
    if len(labels) <= 20:  # a colour per ablation (or per NAS label)
        for i, label in enumerate(labels):
            mine = ok[ok["label"] == label]
            ax.scatter(mine["macs"], mine["top1"], s=22, color=colour(label, i), label=label)
    else:
        ax.scatter(ok["macs"], ok["top1"], s=18, alpha=0.6, label=f"ours (n={len(ok)})")
    for kind, style in _OFF_FRONT.items():
        off = points[points["kind"] == kind]
        if len(off):
            ax.scatter(off["macs"], off["top1"], s=18, label=f"{kind} (n={len(off)})", **style)
    ax.step(front["macs"], front["top1"], where="post", color="C3", label="Pareto front")
    for _, p in front.iterrows():
        ax.annotate(
            str(p["label"]),
            (p["macs"], p["top1"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    if points["macs"].max() > 10 * points["macs"].min():
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    full_scale(ax, chance_top1)
    ax.set(xlabel="MACs per image", ylabel="top-1 (%)", title=title)
    rows = [*paper.TABLE3, *paper.KERNEL_TABLE]
    paper_front = pareto_mask(np.array([r.flops for r in rows]), np.array([r.top1 for r in rows]))
    for i, (row, on_front) in enumerate(zip(rows, paper_front, strict=True)):
        pax.scatter(
            row.flops * 1e9,
            row.top1,
            marker="*o^sDvP<>Xdh"[i % 12],
            s=60,
            color=colour(row.ablation, i),
            edgecolor="k" if on_front else "none",
            label=row.label,
        )
    pax.set(
        xscale="log",
        xlabel="FLOPs per image (paper convention)",
        ylabel="top-1 (%)",
        title="Paper: VAN-B0 on ImageNet-1K, 224² (y zoomed)",
    )
    pax.legend(
        fontsize=6, ncol=2, loc="lower right", title="black edge: paper's front", title_fontsize=6
    )
    for a in (ax, pax):
        a.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def top1_vs_speed(
    runs: pd.DataFrame, metric: str = "best_top1", chance_top1: float | None = None
) -> Figure | None:
    """Top-1 (mean and 95% CI over seeds) against measured training images/s, per ablation (or
    LKA, for runs that changed it without naming an ablation).

    Every point is in the legend below the axes; points are named beside them where a name fits
    without covering another (the fastest-for-their-top-1 first), so 40 runs stay readable.
    """
    done = runs[(runs["status"] == "completed")].dropna(subset=["images_per_sec", metric])
    if done.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
    # one point per LKA (however named) and data set: speed and top-1 are the data's own
    keys = ["model", "data", "label", *SPEC_COLUMNS, "layer_scale"]
    groups = done.assign(label=run_labels(done)).groupby(keys, dropna=False, sort=True)
    several = done["data"].nunique() > 1
    points = []
    for i, (key, group) in enumerate(groups):
        model, data, name = key[0], key[1], key[2] or "(no ablation)"
        label = f"{data} {name}" if several else name
        ci = mean_ci(group.groupby("seed")[metric].mean().to_numpy(float))
        speed = group["images_per_sec"].astype(float)
        ax.errorbar(
            speed.mean(),
            ci.mean,
            yerr=_bars([ci]),
            xerr=[[speed.mean() - speed.min()], [speed.max() - speed.mean()]],
            marker="o",
            capsize=3,
            color=colour(name, i),
            label=f"{model} {label} (n={ci.n})",
        )
        points.append((speed.mean(), ci.mean, label))
    full_scale(ax, chance_top1 if chance_top1 is not None else chance(done))
    ax.set(
        xlabel="measured training images/s (mean over epochs; bars: min-max over runs)",
        ylabel="top-1 (%) (bars: 95% CI over seeds)",
        title="Top-1 against measured training speed",
    )
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    first = np.argsort(~pareto_mask(-x, y), kind="stable")  # faster and better points first
    label_points(ax, [points[i] for i in first])
    return fig


def legend_below(fig: Figure, ax, fontsize: float = 7) -> None:
    """The axes' legend under them, in as many columns as the figure's width holds, the figure
    made taller by its rows; then the layout fixed, so that what is drawn is what is saved."""
    handles, labels = ax.get_legend_handles_labels()
    renderer = fig.canvas.get_renderer()
    probe = fig.text(0, 0, max(labels, key=len), fontsize=fontsize)
    text = max(probe.get_window_extent(renderer).width, 1.0)
    probe.remove()
    # handle, pad and spacing of matplotlib's legend: 2 + 0.8 + 2 font sizes per column
    column = text + 4.8 * fontsize * fig.dpi / 72
    ncol = max(1, min(len(labels), int(0.95 * fig.bbox.width // column)))
    while True:
        rows = -(-len(labels) // ncol)
        fig.set_size_inches(fig.get_size_inches()[0], 4.5 + rows * 1.6 * fontsize / 72)
        legend = fig.legend(
            handles, labels, loc="outside lower center", ncol=ncol, fontsize=fontsize
        )
        fig.canvas.draw()  # the constrained layout makes room for the legend
        if ncol == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            break
        legend.remove()
        ncol -= 1
    fig.set_layout_engine("none")


def label_points(ax, points: Sequence[tuple[float, float, str]], fontsize: float = 7) -> None:
    """Name each (x, y, label) point beside it, in the first place that keeps the name inside
    the axes and off every other name and marker; a point with no such place stays unnamed (the
    legend has it). Drawn after the layout is fixed, as text extents depend on it."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    marker = 3 * ax.figure.dpi / 72  # the marker's radius (6 points across), in pixels
    taken = [
        Bbox.from_extents(px - marker, py - marker, px + marker, py + marker)
        for px, py in ax.transData.transform([(x, y) for x, y, _ in points])
    ]
    for x, y, label in points:
        for dx, dy, ha, va in _PLACES:
            text = ax.annotate(
                label, (x, y), xytext=(dx, dy), textcoords="offset points",
                ha=ha, va=va, fontsize=fontsize,
            )  # fmt: skip
            box = text.get_window_extent(renderer).padded(1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1
            inside &= frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                break
            text.remove()


# Where a point's name may go, nearest first: (dx, dy) in points from it, and the alignment
# that keeps the name on that side.
_HA = {1: "left", -1: "right", 0: "center"}
_VA = {1: "bottom", -1: "top", 0: "center"}
_PLACES = [
    (dx * r, dy * r, _HA[dx], _VA[dy])
    for r in (5, 10)
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
]


def curves(runs: pd.DataFrame, epochs: pd.DataFrame) -> Figure | None:
    """Validation top-1 and train loss per epoch: per ablation (or LKA), mean over seeds and
    min-max band."""
    named = runs.assign(label=run_labels(runs).replace("", "(no ablation)"))
    labelled = epochs.merge(named[["run_id", "label", "model"]], on="run_id")
    if labelled.empty:
        return None
    labelled["label"] = labelled["model"] + " " + labelled["label"]
    fig, (ax, lax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for i, (label, group) in enumerate(labelled.groupby("label")):
        color = colour(label, i)
        for a, col in ((ax, "val_top1"), (lax, "train_loss")):
            stats = group.groupby("epoch")[col].agg(["mean", "min", "max"])
            n = group["run_id"].nunique()
            a.plot(stats.index, stats["mean"], color=color, label=f"{label} (n={n})")
            a.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.15)
    full_scale(ax, chance(runs))
    ax.set(xlabel="epoch", ylabel="val top-1 (%)", title="Validation top-1 (mean, min-max)")
    lax.set(xlabel="epoch", ylabel="train loss", title="Train loss (mean, min-max)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=7)
    for a in (ax, lax):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def study_history(study: optuna.Study, target_name: str) -> Figure | None:
    """Optuna's optimisation history of the first objective."""
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        return None
    # Optuna's plots switch the global style to ggplot; the context puts it back afterwards.
    with warnings.catch_warnings(), plt.style.context("ggplot"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            study, target=_first_value(study), target_name=target_name
        )
    return _sized(ax.figure)


def study_importances(study: optuna.Study, target_name: str) -> Figure | None:
    """Optuna's parameter importances for the first objective; None if there is too little."""
    # Optuna's plots switch the global style to ggplot; the context puts it back afterwards.
    with warnings.catch_warnings(), plt.style.context("ggplot"):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator computes")  # sign handled
        try:
            ax = optuna.visualization.matplotlib.plot_param_importances(
                study, target=_first_value(study, for_importance=True), target_name=target_name
            )
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            log.warning("no parameter importances for study %s: %s", study.study_name, e)
            return None
    if not ax.patches:  # no parameter varied over the completed trials
        plt.close(ax.figure)
        return None
    return _sized(ax.figure)


def _first_value(study: optuna.Study, for_importance: bool = False):
    if len(study.directions) == 1:
        return None
    # Importance evaluators read a target as "lower is better"; a maximised top-1 is negated.
    sign = -1 if for_importance and study.directions[0].name == "MAXIMIZE" else 1
    return lambda t: sign * t.values[0]


def _sized(fig: Figure) -> Figure:
    fig.set_size_inches(7, 4)
    fig.set_layout_engine("constrained")
    return fig
