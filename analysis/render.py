"""Regenerated tables as Markdown, LaTeX and CSV, and a self-contained HTML page with the figures.

CSV keeps the numbers of :func:`van_ablate.analysis.tables.build_table` as they are; Markdown, LaTeX
and HTML show the paper's layout (Table 3 / kernel-size / LayerScale of "Visual Attention Network")
with our columns beside the paper's. The HTML page inlines every figure as a base64 PNG and its
style as one ``<style>`` block, so it opens the same from a mail attachment as from the report
folder.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from van_ablate.analysis import stats
from van_ablate.analysis.collect import run_labels
from van_ablate.analysis.registry import TABLES
from van_ablate.analysis.tables import summary

MISSING = "missing"
SIGNIFICANT = "*"
NO_CONCLUSION = "no conclusion (under 2 seeds)"
NO_STUDY = "runs"  # the group of runs made outside any study
NOTES = (
    "Top-1 ours: mean ± sample std over seeds (n; runs repeating a seed averaged first), "
    "completed runs only; 95% CI: the betting interval of Waudby-Smith & Ramdas (2024), valid "
    "for any accuracy in [0, 100] and never outside it. "
    "Δ base ours: the mean per-seed Δ over the seeds row and baseline share (n pairs); its 95% "
    f"interval and p are the paired t-test ({stats.TEST}, the primary test: a seed fixes the "
    "shared initial weights, data order and augmentation, so what it adds to every row cancels), "
    f"{SIGNIFICANT} marks p < {stats.ALPHA:g}; Welch: the unpaired interval of the same runs, "
    "seeds as independent samples, for comparison. Decided: the paired interval excludes 0 "
    f"(differs) or lies within ±{stats.EQUIVALENCE:g} points (no change); open otherwise. "
    "Stopped (adaptive studies): why the row took no more seeds under its study's rule: decided, "
    "decided (early) by alpha spending, precise (the interval reached the target without "
    "deciding), max seeds, budget (the study's trials ran out first), or open (still running). "
    "A row or baseline with fewer than 2 shared seeds has no interval and no test, and says "
    "'no conclusion'. Agrees with paper: our Δ has the sign of "
    f"the paper's, asked only where the paper's |Δ| is at least {stats.PAPER_DELTA_MIN:g} points. "
    "Train img/s: measured training images per second, mean over epochs and runs (depends on "
    "the machine and its threads). "
    "'missing' where no run matched the row. Params in M, MACs/FLOPs in G (ours: closed form / "
    "fvcore count). † Δ paper compares different scales (our model, data and image size "
    "against the paper's ImageNet-1K at 224²); compare Δ baseline columns instead."
)


def relative(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies under it, so that a report names
    no machine's folders; other paths as they are."""
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def relative_paths(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every absolute path under the working directory made relative."""
    out = frame.copy()
    for col in out.columns:
        paths = out[col].map(lambda v: isinstance(v, str) and Path(v).is_absolute())
        if paths.any():
            out[col] = out[col].where(~paths, out[col][paths].map(relative))
    out.attrs = frame.attrs
    return out


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, one cell per paper/ours figure, ``missing`` where we have no run."""
    recipes = table.loc[~table["missing"], "recipe"].nunique() > 1
    rows = list(table.iterrows())
    return pd.DataFrame(
        {
            "Row": table["row"],
            "Study": table["study"].map(lambda s: s or NO_STUDY),
            "Model": [_model(r, recipes) for _, r in rows],
            "Params (M) paper": table["paper_params_printed"].replace("", "—"),
            "Params (M) ours": _pair(rows, "params_m", "params_counted_m"),
            "FLOPs (G) paper": table["paper_flops_printed"].replace("", "—"),
            "MACs (G) ours": _pair(rows, "macs_g", "macs_counted_g"),
            "Train img/s ours": [_ours_cell(r, f"{r['images_per_sec']:.0f}") for _, r in rows],
            "Top-1 paper": table["paper_top1"].map(lambda x: "—" if pd.isna(x) else f"{x:.1f}"),
            "Top-1 ours": [_top1(r) for _, r in rows],
            "95% CI ours": [
                _ours_cell(r, _ci(r["top1_ci_low"], r["top1_ci_high"])) for _, r in rows
            ],
            "Δ base paper": table["paper_delta_baseline"].map(_signed),
            "Δ base ours [95% CI]": [_ours_cell(r, _delta(r)) for _, r in rows],
            "p (paired)": [_ours_cell(r, _p(r)) for _, r in rows],
            "n pairs": [_ours_cell(r, _pairs(r)) for _, r in rows],
            "Decided": [_ours_cell(r, _decided(r)) for _, r in rows],
            "Stopped": [_ours_cell(r, _stopped(r)) for _, r in rows],
            "Welch [95% CI]": [_ours_cell(r, _welch(r)) for _, r in rows],
            "Agrees with paper": [_ours_cell(r, _agrees(r)) for _, r in rows],
            "Δ paper": [_ours_cell(r, _dagger(r)) for _, r in rows],
        }
    )


def to_markdown(table: pd.DataFrame, kind: str) -> str:
    """A Markdown section: heading, the table, the summary of the tests, the note on conventions."""
    body = display_frame(table).to_markdown(index=False, disable_numparse=True)
    parts = [f"### {TABLES[kind].title}", body]
    if lines := summary(table):
        parts.append("\n".join(f"- {line}" for line in lines))
    return "\n\n".join([*parts, NOTES]) + "\n"


def to_latex(table: pd.DataFrame, kind: str) -> str:
    """A LaTeX ``table`` environment (booktabs), ± and Δ in math mode."""
    frame = display_frame(table)
    tex = frame.to_latex(index=False, escape=True, caption=TABLES[kind].title, label=f"tab:{kind}")
    for plain, math_mode in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("†", r"$^\dagger$")):
        tex = tex.replace(plain, math_mode)
    return tex


def to_csv(table: pd.DataFrame) -> str:
    """The numeric table, one column per figure (see ``tables.TABLE_COLUMNS``)."""
    return table.to_csv(index=False)


def runs_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs as a list to read, one line each in trial order: what each built and what it got."""
    runs = runs.sort_values(["trial_number", "run_id"], na_position="last")
    return pd.DataFrame(
        {
            "Trial": runs["trial_number"].map(lambda n: "—" if pd.isna(n) else f"{n:.0f}"),
            "Run": runs["run_id"],
            "Status": runs["status"],
            "Model": runs["model"],
            "Arch": runs["arch"],
            "LKA": run_labels(runs).replace("", "—"),
            "LayerScale": runs["layer_scale"].map(lambda on: "w/" if on else "w/o"),
            "Seed": runs["seed"].astype(str),
            "Top-1 best": runs["best_top1"].map(lambda x: "—" if pd.isna(x) else f"{x:.2f}"),
            "MACs (G)": runs["macs"].map(lambda x: "—" if pd.isna(x) else _num(x / 1e9)),
            "Train img/s": runs["images_per_sec"].map(lambda x: "—" if pd.isna(x) else f"{x:.0f}"),
        }
    )


def runs_sections(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Heading -> :func:`runs_frame`, one per study (runs outside any study last)."""
    study = runs["study_name"].fillna("").astype(str)
    sections = {}
    for name in sorted(set(study), key=lambda s: (s == "", s)):
        mine = runs[study == name]
        heading = f"Runs in no table: {f'study {name}' if name else NO_STUDY} ({len(mine)})"
        sections[heading] = runs_frame(mine)
    return sections


def runs_markdown(runs: pd.DataFrame) -> str:
    """:func:`runs_sections` as Markdown sections."""
    parts = [
        f"### {heading}\n\n{frame.to_markdown(index=False, disable_numparse=True)}"
        for heading, frame in runs_sections(runs).items()
    ]
    return "\n\n".join(parts) + "\n"


def html_page(
    title: str,
    tables: dict[str, pd.DataFrame],
    figures: Sequence[Path],
    skipped: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
    frames: dict[str, pd.DataFrame] | None = None,
) -> str:
    """One self-contained page: the paper tables, other ``frames`` as they are, every PNG figure
    inlined, and the skipped files."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    for kind, table in tables.items():
        parts.append(f"<h2>{html.escape(TABLES[kind].title)}</h2>")
        parts.append(display_frame(table).to_html(index=False, border=0, escape=True))
        parts += [f"<p class='summary'>{html.escape(line)}</p>" for line in summary(table)]
    if tables:
        parts.append(f"<p class='note'>{html.escape(NOTES)}</p>")
    for heading, frame in (frames or {}).items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(
            frame.to_html(index=False, border=0, escape=True, float_format="{:.4g}".format)
        )
    if figures:
        parts.append("<h2>Figures</h2>")
    for path in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        name = html.escape(Path(path).stem)
        parts.append(
            f"<figure><img alt='{name}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{name}</figcaption></figure>"
        )
    if skipped:
        parts.append("<h2>Skipped files</h2><ul>")
        parts += [f"<li>{html.escape(relative(p))}: {html.escape(r)}</li>" for p, r in skipped]
        parts.append("</ul>")
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;font-size:.9em}"
    "th,td{padding:.25em .6em;border-bottom:1px solid #ccc;text-align:right}"
    "td:first-child,td:nth-child(2),th:first-child{text-align:left}"
    "img{max-width:100%}.note{color:#555;font-size:.85em}"
)


def _num(x: float) -> str:
    return f"{x:.3g}"


def _signed(x: float) -> str:
    return "—" if pd.isna(x) else f"{x:+.2f}"


def _ci(low: float, high: float) -> str:
    return NO_CONCLUSION if pd.isna(low) else f"[{low:.2f}, {high:.2f}]"


def _delta(row: pd.Series) -> str:
    if row["baseline"]:
        return "(baseline)"
    if pd.isna(row["delta_baseline"]):
        return "—"
    if pd.isna(row["p_value"]):
        return f"{_signed(row['delta_baseline'])} {NO_CONCLUSION}"
    mark = f" {SIGNIFICANT}" if row["significant"] else ""
    interval = f"[{row['delta_ci_low']:+.2f}, {row['delta_ci_high']:+.2f}]"
    return f"{_signed(row['delta_baseline'])} {interval}{mark}"


def _p(row: pd.Series) -> str:
    return "—" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g}"


def _pairs(row: pd.Series) -> str:
    return "—" if row["baseline"] else f"{row['n_pairs']:.0f}"


def _decided(row: pd.Series) -> str:
    return "—" if row["decided"] is None or pd.isna(row["decided"]) else str(row["decided"])


def _stopped(row: pd.Series) -> str:
    return "—" if row["stop"] is None or pd.isna(row["stop"]) else str(row["stop"])


def _welch(row: pd.Series) -> str:
    if row["baseline"] or pd.isna(row["welch_ci_low"]):
        return "—"
    return f"[{row['welch_ci_low']:+.2f}, {row['welch_ci_high']:+.2f}]"


def _agrees(row: pd.Series) -> str:
    if row["agrees_paper"] is None or pd.isna(row["agrees_paper"]):
        return "—"
    return "yes" if row["agrees_paper"] else "no"


def _dagger(row: pd.Series) -> str:
    if pd.isna(row["delta_paper"]):
        return "—"
    return _signed(row["delta_paper"]) + ("" if row["same_scale"] else " †")


def _pair(rows: list, closed: str, counted: str) -> list[str]:
    return [_ours_cell(r, f"{_num(r[closed])} / {_num(r[counted])}") for _, r in rows]


def _ours_cell(row: pd.Series, text: str) -> str:
    return MISSING if row["missing"] else text


def _top1(row: pd.Series) -> str:
    extra = f", +{row['n_not_completed']} not completed" if row["n_not_completed"] else ""
    if row["missing"]:
        return MISSING + (f" ({extra[2:]})" if extra else "")
    std = "" if pd.isna(row["top1_std"]) else f" ± {row['top1_std']:.2f}"
    runs = f" in {row['n_runs']} runs" if row["n_runs"] > row["n_seeds"] else ""
    return f"{row['top1_mean']:.2f}{std} (n={row['n_seeds']}{runs}{extra})"


def _model(row: pd.Series, recipes: bool) -> str:
    if pd.isna(row["model"]) or not row["model"]:
        return "—"
    text = row["model"] if not row["data"] else f"{row['model']} {row['data']}@{row['img_size']:g}"
    if row["arch"] not in ("", "default"):
        text += f" [{row['arch']}]"
    return text + (f" recipe {row['recipe']}" if recipes else "")
