"""Collect runs into one tidy pandas DataFrame: run directories, Optuna studies and W&B.

Every source ends in the same columns (:data:`RUN_COLUMNS`, one row per run) so the tables of
the paper (Table 3, the kernel-size table, the LayerScale table) and the figures are built the
same way whatever the runs came from. Per-epoch metrics go to a second, long DataFrame
(:data:`EPOCH_COLUMNS`, one row per run and epoch). Files that cannot be read are skipped and
named, never fatal: a report of 99 good runs and one torn file still renders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from van_ablate.checks import first_line
from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKASpec
from van_ablate.results import SCHEMA_VERSION, readable, upgrade

log = logging.getLogger("analysis")

#: The LKA switches, as :class:`LKASpec` declares them: a new switch is a new column, and runs that
#: differ in it are never pooled into one row.
SPEC_COLUMNS = tuple(f.name for f in dataclasses.fields(LKASpec))

#: One row per run. ``dilation`` is the resolved one; ``arch`` is "default" or the changed
#: dims/depths/mlp_ratios; ``recipe`` a short hash of the config's ``train`` group (runs are
#: only pooled over seeds within one recipe); params/MACs are contract (2) (closed form and
#: counted); ``best_top1`` / ``final_top1`` in percent; ``epochs`` the epochs completed;
#: ``images_per_sec`` the mean over epochs; ``path`` the results.json read.
RUN_COLUMNS = (
    "run_id", "source", "path", "status", "reason", "model", "arch", "recipe", "ablations",
    *SPEC_COLUMNS,
    "layer_scale", "data", "num_classes", "img_size", "seed", "params", "params_counted", "macs",
    "macs_counted", "flops_paper", "best_epoch", "best_top1", "best_top5", "final_epoch",
    "final_top1", "final_top5", "final_val_loss", "epochs", "images_per_sec", "wall_time_s",
    "study_name", "trial_number",
)  # fmt: skip
#: One row per run and epoch, as in results.json's ``epochs`` list (epoch is 1-based).
EPOCH_COLUMNS = (
    "run_id", "epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr", "images_per_sec",
    "time_s",
)  # fmt: skip
_REQUIRED = ("run_id", "status", "model", "lka", "data", "seed", "epochs")


@dataclasses.dataclass
class Collection:
    """What a report is made from: runs, their epochs, study trials and the files skipped."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    trials: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __add__(self, other: Collection) -> Collection:
        runs = _concat([self.runs, other.runs], RUN_COLUMNS).drop_duplicates("run_id", keep="first")
        epochs = _concat([self.epochs, other.epochs], EPOCH_COLUMNS)
        epochs = epochs.drop_duplicates(["run_id", "epoch"], keep="first")
        # one study per report: keep its frame (and its attrs: objective names) as it is
        trials = self.trials if not self.trials.empty else other.trials
        return Collection(runs, epochs, trials, self.skipped + other.skipped)


def empty() -> Collection:
    """A collection with the documented columns and no rows."""
    return Collection(pd.DataFrame(columns=RUN_COLUMNS), pd.DataFrame(columns=EPOCH_COLUMNS))


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """The results.json files under ``paths``: run directories, folders of them, or the files.

    Folders are searched recursively, except ``superseded/`` ones: the training job moves a run
    started over with ``resume=never`` there, and its old results must not count as a seed.
    """
    found: dict[Path, None] = {}  # ordered and without repeats (a run given twice is read once)
    for p in map(Path, paths):
        if p.is_file():
            found[p.resolve()] = None
        elif (p / "results.json").is_file():
            found[(p / "results.json").resolve()] = None
        elif p.is_dir():
            found.update(
                (f.resolve(), None)
                for f in sorted(p.rglob("results.json"))
                if "superseded" not in f.relative_to(p).parts
            )
        else:
            raise ConfigError("runs", str(p), "no such file or directory")
    return list(found)


def load_runs(paths: Iterable[str | Path]) -> Collection:
    """Read every results.json under ``paths`` (contract (3)); skip and name what is not one.

    >>> load_runs(["runs/van_proxy"]).runs[["run_id", "best_top1"]]  # doctest: +SKIP
    """
    rows, epochs, skipped = [], [], []
    for path in find_results(paths):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
            row = run_row(results, source="results.json", path=str(path))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            # ValueError covers JSON and UTF-8 errors; the others, fields of the wrong type
            reason = first_line(e)
            skipped.append((str(path), reason))
            log.warning("skipped %s: %s", path, reason)
            continue
        rows.append(row)
        epochs.extend(
            {"run_id": row["run_id"], **{k: e.get(k) for k in EPOCH_COLUMNS[1:]}}
            for e in results["epochs"]
            if isinstance(e, Mapping)
        )
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS).drop_duplicates("run_id", keep="last")
    return Collection(runs, pd.DataFrame(epochs, columns=EPOCH_COLUMNS), skipped=skipped)


def run_row(results: Any, *, source: str, path: str) -> dict[str, Any]:
    """Flatten one results.json (any readable schema) into a :data:`RUN_COLUMNS` row.

    Raises ValueError naming what makes ``results`` partial or foreign.
    """
    if not readable(results):
        version = results.get("schema_version") if isinstance(results, Mapping) else None
        expected = f"expected 1 to {SCHEMA_VERSION}"
        raise ValueError(f"not a van-ablate results.json (schema_version={version!r}, {expected})")
    results = upgrade(results)
    missing = [k for k in _REQUIRED if k not in results]
    if missing:
        raise ValueError(f"partial results.json: missing {', '.join(missing)}")
    lka = {k: v for k, v in dict(results["lka"]).items() if k != "resolved_dilation"}
    try:
        spec = LKASpec.from_any(lka)
    except ConfigError as e:
        raise ValueError(f"bad lka: {e}") from None
    data, cx = results["data"] or {}, results.get("complexity") or {}
    best, final = results.get("best") or {}, results.get("final") or {}
    trial = results.get("trial") or {}
    epochs = [e for e in results["epochs"] if isinstance(e, Mapping)]
    speeds = [e["images_per_sec"] for e in epochs if _number(e.get("images_per_sec"))]
    return {
        "run_id": str(results["run_id"]),
        "source": source,
        "path": path,
        "status": results["status"],
        "reason": results.get("reason"),
        "model": results["model"],
        "arch": arch_of(results.get("config") or {}),
        "recipe": recipe_of(results.get("config") or {}),
        "ablations": "+".join(results.get("ablations") or []),
        **spec_columns(spec),
        "layer_scale": bool(results.get("layer_scale", True)),
        "data": data.get("name"),
        "num_classes": data.get("num_classes"),
        "img_size": data.get("img_size"),
        "seed": results["seed"],
        **{k: cx.get(k) for k in ("params", "params_counted", "macs", "macs_counted")},
        "flops_paper": cx.get("flops_paper"),
        "best_epoch": best.get("epoch"),
        "best_top1": _float(best.get("val_top1")),
        "best_top5": _float(best.get("val_top5")),
        "final_epoch": final.get("epoch"),
        "final_top1": _float(final.get("val_top1")),
        "final_top5": _float(final.get("val_top5")),
        "final_val_loss": _float(final.get("val_loss")),
        "epochs": len(epochs),
        "images_per_sec": sum(speeds) / len(speeds) if speeds else math.nan,
        "wall_time_s": _float(results.get("wall_time_s")),
        "study_name": trial.get("study_name"),
        "trial_number": trial.get("number"),
    }


def spec_columns(spec: LKASpec) -> dict[str, Any]:
    """The :data:`SPEC_COLUMNS` of a spec, with the dilation resolved (so 'auto' matches 3)."""
    return {**{k: getattr(spec, k) for k in SPEC_COLUMNS}, "dilation": spec.resolved_dilation}


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run as people name it: its ablations (``no_dw_conv``), else its LKA (``K7 d2``)."""
    k = runs["kernel_size"].map(lambda x: "" if pd.isna(x) else f"K{int(x)}")
    d = runs["dilation"].map(lambda x: "" if pd.isna(x) else f" d{int(x)}")
    return runs["ablations"].where(runs["ablations"] != "", k + d)


def arch_of(config: Mapping[str, Any]) -> str:
    """'default', or the dims/depths/mlp_ratios a run changed from its model's (NAS trials)."""
    model = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(model, Mapping):
        return "default"
    from van_ablate.model.van import ARCHS, MLP_RATIOS

    base = {**ARCHS.get(model.get("name"), {}), "mlp_ratios": MLP_RATIOS}
    changed = [
        f"{k}={list(model[k])}"
        for k in ("dims", "depths", "mlp_ratios")
        if model.get(k) is not None and list(model[k]) != list(base.get(k, ()))
    ]
    return " ".join(changed) or "default"


def recipe_of(config: Mapping[str, Any]) -> str:
    """Eight hex digits identifying the training recipe (the ``train`` group), "" if none."""
    train = config.get("train") if isinstance(config, Mapping) else None
    if not train:
        return ""
    return hashlib.sha1(json.dumps(train, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _float(x: Any) -> float:
    return float(x) if _number(x) else math.nan


def _concat(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)
