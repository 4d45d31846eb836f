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

MISSING = "missing"
TITLES = {
    "table3": "Table 3: LKA components",
    "kernel": "Kernel size K of LKA",
    "layer_scale": "LayerScale",
}
NOTES = (
    "Top-1 ours: mean ± sample std over seeds (n; runs repeating a seed averaged first), "
    "completed runs only; "
    "'missing' where no run matched the row. Params in M, MACs/FLOPs in G (ours: closed form / "
    "fvcore count). † Δ paper compares different scales (our model, data and image size "
    "against the paper's ImageNet-1K at 224²); compare Δ baseline columns instead."
)


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, one cell per paper/ours figure, ``missing`` where we have no run."""
    recipes = table.loc[~table["missing"], "recipe"].nunique() > 1
    rows = list(table.iterrows())
    return pd.DataFrame(
        {
            "Row": table["row"],
            "Model": [_model(r, recipes) for _, r in rows],
            "Params (M) paper": table["paper_params_printed"].replace("", "—"),
            "Params (M) ours": _pair(rows, "params_m", "params_counted_m"),
            "FLOPs (G) paper": table["paper_flops_printed"].replace("", "—"),
            "MACs (G) ours": _pair(rows, "macs_g", "macs_counted_g"),
            "Top-1 paper": table["paper_top1"].map(lambda x: "—" if pd.isna(x) else f"{x:.1f}"),
            "Top-1 ours": [_top1(r) for _, r in rows],
            "Δ base paper": table["paper_delta_baseline"].map(_signed),
            "Δ base ours": [_ours_cell(r, _signed(r["delta_baseline"])) for _, r in rows],
            "Δ paper": [_ours_cell(r, _dagger(r)) for _, r in rows],
        }
    )


def to_markdown(table: pd.DataFrame, kind: str) -> str:
    """A Markdown section: heading, the table, the note on conventions."""
    body = display_frame(table).to_markdown(index=False, disable_numparse=True)
    return f"### {TITLES[kind]}\n\n{body}\n\n{NOTES}\n"


def to_latex(table: pd.DataFrame, kind: str) -> str:
    """A LaTeX ``table`` environment (booktabs), ± and Δ in math mode."""
    frame = display_frame(table)
    tex = frame.to_latex(index=False, escape=True, caption=TITLES[kind], label=f"tab:{kind}")
    for plain, math_mode in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("†", r"$^\dagger$")):
        tex = tex.replace(plain, math_mode)
    return tex


def to_csv(table: pd.DataFrame) -> str:
    """The numeric table, one column per figure (see ``tables.TABLE_COLUMNS``)."""
    return table.to_csv(index=False)


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
        parts.append(f"<h2>{html.escape(TITLES.get(kind, kind))}</h2>")
        parts.append(display_frame(table).to_html(index=False, border=0, escape=True))
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
        parts += [f"<li>{html.escape(p)}: {html.escape(r)}</li>" for p, r in skipped]
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
