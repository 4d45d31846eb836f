"""``python -m van_ablate.analysis.report``: the paper's tables and our figures, from runs.

One command per report, each reading run directories and/or an Optuna storage (and a W&B project
when logged in), writing Markdown / LaTeX / CSV tables, PNG + SVG figures and one self-contained
HTML page into ``--out``; a study's runs that no table of the report shows (a search's trials)
are listed by study in ``other_runs.md`` / ``.csv`` and on the page::

    python -m van_ablate.analysis.report table3 multirun/table3_van_proxy --out reports/table3
    python -m van_ablate.analysis.report kernel runs/van_proxy --format md,csv --out reports/kernel
    python -m van_ablate.analysis.report pareto --storage multirun/nas_van_proxy/optuna_journal.log
    python -m van_ablate.analysis.report all runs/ --storage sqlite:///studies.db --study table3

Table 3, the kernel-size table and the LayerScale table are those of "Visual Attention Network"
(Sec. 4.2-4.3); bad input prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd
import yaml

from van_ablate.analysis import figures, render
from van_ablate.analysis.collect import SPEC_COLUMNS, Collection, empty, load_runs, run_labels
from van_ablate.analysis.registry import TABLES
from van_ablate.analysis.studies import load_study, results_paths, trials_frame
from van_ablate.analysis.tables import METRICS, build_table, runs_in_no_table
from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.io import atomic_write_text
from van_ablate.sweep.factories import startup_trials as sampler_startup_trials

log = logging.getLogger("analysis")
FORMATS = ("md", "tex", "csv", "html")
# The default sampler's (TPE's) startup count, read from Optuna: fewer trials are random draws.
STARTUP_TRIALS = sampler_startup_trials()
FIGURES = ("kernel_size", "pareto", "speed", "curves", "history", "importances")
#: Columns of ``other_runs.csv``: the runs in no table of the report.
OTHER_COLUMNS = [
    "study_name", "trial_number", "run_id", "status", "model", "arch", "ablations", *SPEC_COLUMNS,
    "layer_scale", "data", "img_size", "seed", "best_top1", "final_top1", "params", "macs",
    "images_per_sec",
]  # fmt: skip
#: report -> (tables, figures): one report per table of the registry, the study's and all
REPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{t.name: ((t.name,), t.figures) for t in TABLES.values()},
    "pareto": ((), ("pareto", "history", "importances")),
    "all": (tuple(TABLES), FIGURES),
}


@dataclasses.dataclass
class Report:
    """What one report wrote: every file, the tables by name and the figure files."""

    files: list[Path]
    tables: dict[str, pd.DataFrame]
    figures: list[Path]


def make_report(
    kind: str,
    data: Collection,
    out: Path,
    *,
    study: optuna.Study | None = None,
    formats: Sequence[str] = FORMATS,
    metric: str = "best",
    svg: bool = True,
    startup: int = 10,
) -> Report:
    """Write report ``kind`` of ``data`` (and ``study``) into ``out``.

    >>> make_report("table3", load_runs(["runs"]), Path("reports/table3"))  # doctest: +SKIP
    """
    table_names, figure_names = REPORTS[kind]
    files: list[Path] = []
    tables = {name: build_table(name, data.runs, metric) for name in table_names}
    for name, table in tables.items():
        writers = {
            "md": lambda t=table, n=name: render.to_markdown(t, n),
            "tex": lambda t=table, n=name: render.to_latex(t, n),
            "csv": lambda t=table: render.to_csv(t),
        }
        for fmt in (f for f in formats if f in writers):
            files.append(atomic_write_text(out / f"{name}.{fmt}", writers[fmt]()))
    # a study's runs that no table shows (a search's trials, a grid's points off the paper's
    # rows, another study's baseline) are listed by study; runs outside studies were asked for
    # by the tables they fill
    others = data.runs.iloc[:0]
    if tables:
        others = runs_in_no_table(table_names, data.runs).dropna(subset=["study_name"])
    if not others.empty:
        if "csv" in formats:
            listed = others[OTHER_COLUMNS].astype({"trial_number": "Int64"})
            files.append(atomic_write_text(out / "other_runs.csv", render.to_csv(listed)))
        if "md" in formats:
            files.append(atomic_write_text(out / "other_runs.md", render.runs_markdown(others)))
    front = pareto_front(data, METRICS[metric]) if "pareto" in figure_names else None
    few = _too_few(data, study, startup) if front is not None else None
    if front is not None:
        files.append(atomic_write_text(out / "pareto_front.csv", front.to_csv(index=False)))
        if "md" in formats:
            md = front.to_markdown(index=False) + (f"\n\nWarning: front {few}." if few else "")
            files.append(atomic_write_text(out / "pareto_front.md", md + "\n"))
    if not data.trials.empty:
        trials = render.relative_paths(data.trials).to_csv(index=False)
        files.append(atomic_write_text(out / "trials.csv", trials))
    pngs = []
    for name in figure_names:
        fig = _figure(name, data, study, METRICS[metric], startup)
        if fig is None:
            log.warning("no %s figure: nothing to plot in the inputs", name)
            continue
        saved = figures.save(fig, out / "figures", name, figures.FORMATS if svg else ("png",))
        files += saved
        pngs += [p for p in saved if p.suffix == ".png"]
    if "html" in formats:
        page = render.html_page(
            f"van-ablate report: {kind}",
            tables,
            pngs,
            data.skipped,
            _sources(data, study),
            {
                **render.runs_sections(others),
                **({"Pareto front of the study": front} if front is not None else {}),
            },
        )
        files.append(atomic_write_text(out / f"{kind}.html", page))
    return Report(files, tables, pngs)


def _figure(name: str, data: Collection, study: optuna.Study | None, metric: str, startup: int):
    if name == "kernel_size":
        return figures.top1_vs_kernel(data.runs, metric)
    if name == "curves":
        return figures.curves(data.runs, data.epochs)
    if name == "speed":
        return figures.top1_vs_speed(data.runs, metric)
    if name == "pareto":
        title = f"Top-1 against MACs: study {study.study_name}" if study else "Top-1 against MACs"
        if (few := _too_few(data, study, startup)) is not None:
            title += f"\nwarning: {few}"
        points = pareto_points(data, metric)
        return figures.top1_vs_macs(points, title, figures.chance(data.runs))
    if study is None:
        return None
    target = data.trials.attrs.get("objective", ["value"])[0]
    if name == "history":
        return figures.study_history(study, target)
    fig = figures.study_importances(study, target)
    if fig is not None and (few := _too_few(data, study, startup)) is not None:
        fig.axes[0].set_title(f"{fig.axes[0].get_title()}\nwarning: {few}", color="C3")
    return fig


def _too_few(data: Collection, study: optuna.Study | None, startup: int) -> str | None:
    """A warning when the study has fewer complete trials than its sampler's startup count."""
    if study is None or data.trials.empty:
        return None
    done = int((data.trials["state"] == "COMPLETE").sum())
    if done >= startup:
        return None
    text = f"from {done} complete trials, fewer than the sampler's {startup} startup trials"
    log.warning("study %s: %s", study.study_name, text)
    return text


def startup_trials(storage: str | None) -> int:
    """The sampler's startup count: its ``n_startup_trials`` or ``population_size`` (as set in
    the sweep's ``multirun.yaml`` beside a journal storage, or Optuna's default for its class),
    else :data:`STARTUP_TRIALS`.

    >>> startup_trials(None)
    10
    """
    path = Path(storage).parent / "multirun.yaml" if storage and "://" not in storage else None
    if path is None or not path.is_file():
        return STARTUP_TRIALS
    try:
        sampler = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["sampler"] or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return STARTUP_TRIALS
    return sampler_startup_trials(sampler if isinstance(sampler, dict) else None)


def pareto_points(data: Collection, metric: str = "best_top1") -> pd.DataFrame:
    """(macs, top1, label, kind, number) per finished trial of a study, else per run
    configuration.

    ``label`` names the point as people know it: its ablations (``no_dw_conv``), else its LKA
    (``K13 d2``) with the trial number; ``kind`` is "complete", "pruned" (its value is from the
    epochs it ran) or "infeasible" (outside the sweep's constraints); only complete points can
    be on the Pareto front. ``number`` is the trial's, NaN for run configurations.
    """
    trials = data.trials
    if not trials.empty:
        names = trials.attrs.get("objective", [])
        top1 = next((n for n in names if n.endswith("val_top1")), names[0] if names else None)
        done = trials[trials["state"].isin(["COMPLETE", "PRUNED"])]
        macs = _trial_macs(done, names, data.runs)
        if top1 is not None and macs.notna().any():
            kind = done["state"].str.lower().where(done["feasible"], "infeasible")
            label = _trial_labels(done, data.runs)
            return pd.DataFrame(
                {"macs": macs, "top1": done[top1], "label": label, "kind": kind,
                 "number": done["number"]}
            )  # fmt: skip
    runs = data.runs[data.runs["status"] == "completed"]
    keys = ["model", "ablations", *SPEC_COLUMNS, "layer_scale", "arch", "macs"]
    grouped = runs.groupby(keys, dropna=False)[metric].mean().reset_index()
    label = run_labels(grouped)
    return pd.DataFrame(
        {
            "macs": grouped["macs"],
            "top1": grouped[metric],
            "label": label,
            "kind": "complete",
            "number": math.nan,
        }  # fmt: skip
    )


def _trial_labels(trials: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    of_study = runs[runs["study_name"] == trials["study_name"].iloc[0]] if len(trials) else runs
    linked = of_study.dropna(subset=["trial_number"]).drop_duplicates("trial_number")
    linked = linked.set_index("trial_number")
    ablations, labels = linked["ablations"].to_dict(), run_labels(linked).to_dict()
    return pd.Series(
        [ablations.get(n) or f"{labels.get(n, '')} #{n}".strip() for n in trials["number"]],
        index=trials.index,
    )


def pareto_front(data: Collection, metric: str = "best_top1") -> pd.DataFrame | None:
    """The study's trials on the top-1 / MACs front: number, label, objectives, parameters."""
    points = pareto_points(data, metric)
    if data.trials.empty or points.empty or points["number"].isna().any():
        return None
    points = points[points["kind"] == "complete"]
    on_front = figures.pareto_mask(points["macs"].to_numpy(float), points["top1"].to_numpy(float))
    front = data.trials.loc[points.index[on_front]].assign(
        macs=points["macs"][on_front], label=points["label"][on_front]
    )
    objectives = data.trials.attrs.get("objective", [])
    keep = ["number", "label", "state", *objectives]
    keep += [] if "complexity.macs" in objectives else ["macs"]
    keep += [c for c in front.columns if c.startswith("param.")]
    return front.sort_values("macs")[keep].reset_index(drop=True)


def _trial_macs(trials: pd.DataFrame, names: list[str], runs: pd.DataFrame) -> pd.Series:
    if "complexity.macs" in names:
        return trials["complexity.macs"].astype(float)
    if "attr.macs" in trials:
        return trials["attr.macs"].astype(float)
    of_study = runs[runs["study_name"] == trials["study_name"].iloc[0]] if len(trials) else runs
    linked = of_study.dropna(subset=["trial_number"]).set_index("trial_number")["macs"]
    return trials["number"].map(linked).astype(float)


def _sources(data: Collection, study: optuna.Study | None) -> list[str]:
    runs = data.runs
    line = f"{len(runs)} runs ({(runs['status'] == 'completed').sum()} completed)"
    if study is not None:
        line += f"; study {study.study_name} with {len(data.trials)} trials"
    if data.skipped:
        line += f"; {len(data.skipped)} files skipped (listed at the end)"
    return [line]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m van_ablate.analysis.report",
        description="Regenerate the paper's tables and the report figures from runs and studies.",
    )
    p.add_argument("report", choices=sorted(REPORTS), help="which report to write")
    p.add_argument("runs", nargs="*", help="run directories, folders of them, or results.json")
    p.add_argument("--storage", help="Optuna storage: sqlite:///..., postgresql://..., journal")
    p.add_argument("--study", help="study name in --storage (default: its only study)")
    p.add_argument("--wandb-runs", metavar="ENTITY/PROJECT", help="also read runs from W&B")
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--format", default=",".join(FORMATS), help="comma list of md,tex,csv,html")
    p.add_argument("--metric", default="best", help="top-1 to pool: best or final")
    p.add_argument("--no-svg", action="store_true", help="figures as PNG only (default +SVG)")
    p.add_argument(
        "--startup-trials",
        type=int,
        help="warn on importances and fronts from fewer complete trials (default: the sampler's "
        f"n_startup_trials or population_size in the sweep's multirun.yaml, else {STARTUP_TRIALS})",
    )
    p.add_argument("--wandb-project", help="also log tables and figures to this W&B project")
    p.add_argument("--wandb-group", help="W&B group of the report run (default: the study)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, collect, write; ``error: ...`` and exit 2 on bad input."""
    args = _parser().parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        report = _run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"wrote {len(report.files)} files to {args.out}")
    return 0


def _run(args: argparse.Namespace) -> Report:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS] or ([] if formats else [args.format])
    if bad:
        raise ConfigError("--format", bad[0], f"must be a comma list of {','.join(FORMATS)}")
    if args.metric not in METRICS:
        raise ConfigError("--metric", args.metric, f"must be one of {', '.join(METRICS)}")
    if not (args.runs or args.storage or args.wandb_runs):
        raise ConfigError("runs", "", "give run directories, --storage or --wandb-runs")
    if args.startup_trials is not None and args.startup_trials < 1:
        raise ConfigError("--startup-trials", args.startup_trials, "must be an integer >= 1")
    if args.study and not args.storage:
        raise ConfigError("--study", args.study, "needs --storage")
    study, trials = None, pd.DataFrame()
    if args.storage:
        study = load_study(args.storage, args.study)
        trials = trials_frame(study)
    paths = [*args.runs, *results_paths(trials)]
    data = load_runs(paths) if paths else empty()
    data.trials = trials
    if args.wandb_runs:
        from van_ablate.analysis.wandb_io import collect_wandb
        from van_ablate.wandb_logger import DEFAULT_HOST, has_api_key

        host = os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)
        data = data + collect_wandb(args.wandb_runs, logged_in=has_api_key(host))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", args.out, f"cannot be created ({e.strerror})") from None
    report = make_report(
        args.report,
        data,
        out,
        study=study,
        formats=formats,
        metric=args.metric,
        svg=not args.no_svg,
        startup=args.startup_trials or startup_trials(args.storage),
    )
    if args.wandb_project:
        from van_ablate.analysis.wandb_io import upload_report
        from van_ablate.wandb_logger import resolve_mode

        mode = resolve_mode("auto")
        run_dir = upload_report(
            report.tables | ({"trials": data.trials} if not data.trials.empty else {}),
            report.figures,
            project=args.wandb_project,
            group=args.wandb_group or (study.study_name if study else None),
            name=f"report-{args.report}",
            mode=mode,
            out_dir=out,
        )
        if mode == "offline":
            print(f"W&B is offline; upload the report with: wandb sync {run_dir}")
    return report


if __name__ == "__main__":
    sys.exit(main())
