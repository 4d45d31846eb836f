"""W&B both ways: runs read back through the public API, and a report pushed as Tables and images.

Reading needs an API key and a network; without either the caller skips W&B with one warning.
Writing goes through an ordinary ``wandb.init`` run in the study's group (job type ``report``),
so the dashboard of a sweep shows the same tables and figures as the files on disk; offline
mode writes the run under ``dir`` for ``wandb sync``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from van_ablate.analysis.collect import RUN_COLUMNS, Collection, empty, run_row
from van_ablate.checks import first_line
from van_ablate.results import SCHEMA_VERSION

log = logging.getLogger("analysis")


def collect_wandb(path: str, *, logged_in: bool, max_runs: int = 10_000) -> Collection:
    """Runs of the W&B project ``path`` ("entity/project") whose summary holds their results.

    A training job's W&B run holds the resolved config and, in its summary, the results
    (:func:`results_from_wandb` rebuilds results.json from them, without the per-epoch list);
    a run without them is skipped and named. When not ``logged_in`` (no API key) nothing is
    fetched and one warning says so.
    """
    if not logged_in:
        log.warning("skipped W&B project %s: no API key (set WANDB_API_KEY or wandb login)", path)
        return empty()
    import wandb

    try:
        runs = list(wandb.Api(timeout=30).runs(path, per_page=500))[:max_runs]
    except Exception as e:  # network, auth and GraphQL errors have no common base class
        log.warning("skipped W&B project %s: %s", path, first_line(e))
        return Collection(empty().runs, empty().epochs, skipped=[(f"wandb:{path}", str(e))])
    rows, skipped = [], []
    for run in runs:
        try:
            results = results_from_wandb(
                run.id, dict(run.config), dict(run.summary._json_dict), list(run.tags)
            )
            rows.append(run_row(results, source="wandb", path=f"wandb:{path}/{run.id}"))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            skipped.append((f"wandb:{path}/{run.id}", str(e)))
            log.warning("skipped wandb:%s/%s: %s", path, run.id, e)
    out = empty()
    out.runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    out.skipped = skipped
    return out


def results_from_wandb(
    run_id: str, config: Mapping[str, Any], summary: Mapping[str, Any], tags: Sequence[str]
) -> dict[str, Any]:
    """A results.json (current schema, no epochs) from a training run's W&B config and summary.

    The training job sets the resolved config as the run config, its ablations as tags after the
    model name, and status / best / final / complexity / wall time as the summary.
    """
    model, data = config["model"], config["data"]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": summary["status"],
        "reason": summary.get("reason"),
        "model": model["name"],
        "ablations": [t for t in tags if t != model["name"]],
        "lka": config["lka"],
        "layer_scale": model.get("layer_scale", True),
        "data": {
            "name": data.get("name"),
            "num_classes": data.get("num_classes"),
            "img_size": data.get("img_size"),
        },
        "seed": config["seed"],
        "complexity": summary.get("complexity"),
        "epochs": [],
        "best": summary.get("best"),
        "final": summary.get("final"),
        "trial": config.get("trial") if (config.get("trial") or {}).get("study_name") else None,
        "wall_time_s": summary.get("wall_time_s"),
        "config": dict(config),
    }


def upload_report(
    tables: Mapping[str, pd.DataFrame],
    figures: Sequence[Path],
    *,
    project: str,
    group: str | None,
    name: str,
    mode: str,
    out_dir: Path,
) -> Path | None:
    """Log ``tables`` as W&B Tables and the PNGs of ``figures`` as images in one report run.

    Returns the run's local directory (under ``out_dir/wandb``).
    """
    import wandb

    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        name=name,
        dir=str(out_dir),
        mode=mode,
        reinit="create_new",
        settings=wandb.Settings(silent=True),
    )
    try:
        payload: dict[str, Any] = {
            k: wandb.Table(dataframe=_loggable(t)) for k, t in tables.items()
        }
        payload |= {f"figures/{p.stem}": wandb.Image(str(p)) for p in figures if p.suffix == ".png"}
        run.log(payload)
        return Path(run.dir).parent
    finally:
        run.finish()


def _loggable(frame: pd.DataFrame) -> pd.DataFrame:
    # W&B Tables take one type per column; object columns mixing None and str go as str.
    out = frame.copy()
    for col in out.select_dtypes(include=["object", "string"]).columns:
        out[col] = out[col].map(lambda v: "" if v is None or v != v else str(v))
    return out
