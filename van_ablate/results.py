"""``results.json``: what one training run reports (schema 3, documented in the README).

The per-epoch top-1 / top-5 (in percent) follow the paper's evaluation (ImageNet-1K val top-1,
Sec. 4.1); params and MACs come from :mod:`van_ablate.model.complexity`. Objective names are dotted
paths into this document, so sweepers can optimise any of :data:`OBJECTIVE_FIELDS`::

    objective_values(results, ["best.val_top1", "complexity.macs"])  # -> [71.2, 151234560.0]
"""

from __future__ import annotations

import copy
import importlib.metadata
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from van_ablate import checks
from van_ablate.model.spec import ModelSpec

SCHEMA_VERSION = 3
# Keys renamed by each schema version (old dotted path -> new), so older files stay readable:
# 2: ``setup.epochs`` (which counted the cooldown, unlike ``train.epochs``) -> total_epochs;
# 3: ``presets`` -> ``ablations``, the name of the config group (``+ablation=k7``).
RENAMED: dict[int, dict[str, str]] = {
    2: {"setup.epochs": "setup.total_epochs"},
    3: {"presets": "ablations"},
}
STATUSES = ("running", "completed", "diverged", "pruned", "failed")
OBJECTIVE_FIELDS: tuple[str, ...] = (
    "best.val_top1",
    "best.val_top5",
    "final.val_top1",
    "final.val_top5",
    "final.val_loss",
    "final.images_per_sec",
    "complexity.params",
    "complexity.params_counted",
    "complexity.macs",
    "complexity.macs_counted",
    "complexity.flops_paper",
    "wall_time_s",
)
# The objectives where more is better: a sweep without a direction refuses them, since the
# official sweeper's default direction is minimize.
HIGHER_IS_BETTER: tuple[str, ...] = (
    "best.val_top1",
    "best.val_top5",
    "final.val_top1",
    "final.val_top5",
    "final.images_per_sec",
)
_PACKAGES = ("torch", "torchvision", "timm", "hydra-core", "omegaconf", "optuna", "wandb", "numpy")


def document(
    *,
    run_id: str,
    run_name: str,
    status: str,
    reason: str | None,
    model: ModelSpec,
    ablations: list[str],
    data: dict[str, Any],
    seed: int,
    complexity: dict[str, int],
    setup: dict[str, Any],
    epochs: list[dict[str, Any]],
    objective: list[str],
    diverged: dict[str, Any] | None,
    trial: tuple[str, int] | None,
    wall_time_s: float,
    git_commit: str | None,
    config: dict[str, Any],
) -> dict[str, Any]:
    """A results.json document (:data:`SCHEMA_VERSION`); best, final and the objective derive
    from ``epochs``."""
    best, final = summarize_epochs(epochs)
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "run_name": run_name,
        "status": status,
        "reason": reason,
        "model": model.name,
        "ablations": ablations,
        "lka": model.lka.to_dict(),
        "layer_scale": model.layer_scale,
        "data": data,
        "seed": seed,
        "complexity": complexity,
        "setup": setup,
        "epochs": epochs,
        "best": best,
        "final": final,
        "objective": {"names": objective, "values": []},
        "diverged": diverged,
        "trial": None if trial is None else {"study_name": trial[0], "number": trial[1]},
        "wall_time_s": wall_time_s,
        "git_commit": git_commit,
        "versions": package_versions(),
        "config": config,
    }
    doc["objective"]["values"] = objective_values(doc, objective)
    return doc


def readable(doc: Any) -> bool:
    """Whether ``doc`` is a results.json document of this or an earlier schema."""
    version = doc.get("schema_version") if isinstance(doc, Mapping) else None
    return isinstance(version, int) and 1 <= version <= SCHEMA_VERSION


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (any :func:`readable` schema) in the current one: renamed keys under new names.

    >>> upgrade({"schema_version": 1, "presets": ["k7"], "setup": {"epochs": 6}})
    {'schema_version': 3, 'setup': {'total_epochs': 6}, 'ablations': ['k7']}
    """
    out = copy.deepcopy(doc)
    for version in range(out["schema_version"] + 1, SCHEMA_VERSION + 1):
        for old, new in RENAMED.get(version, {}).items():
            *old_parents, old_leaf = old.split(".")
            *new_parents, new_leaf = new.split(".")
            source, target = out, out
            for part in old_parents:
                source = source.get(part) if isinstance(source, dict) else None
            for part in new_parents:
                target = target.get(part) if isinstance(target, dict) else None
            if isinstance(source, dict) and isinstance(target, dict) and old_leaf in source:
                target[new_leaf] = source.pop(old_leaf)
    out["schema_version"] = SCHEMA_VERSION
    return out


def summarize_epochs(epochs: list[dict[str, Any]]) -> tuple[dict | None, dict | None]:
    """(best, final) from the per-epoch records; best is the highest val_top1, earliest on ties."""
    if not epochs:
        return None, None
    best = max(epochs, key=lambda e: (e["val_top1"], -e["epoch"]))
    last = epochs[-1]
    return (
        {k: best[k] for k in ("epoch", "val_top1", "val_top5")},
        {k: last[k] for k in ("epoch", "val_top1", "val_top5", "val_loss", "images_per_sec")},
    )


def objective_values(results: dict[str, Any], names: list[str]) -> list[float]:
    """The values of dotted ``names`` in ``results``; NaN where the run has none (no epoch)."""
    return [float(checks.select(results, name, default=float("nan"))) for name in names]


def epoch_counterpart(name: str) -> str:
    """The per-epoch metric a pruner sees for objective ``name`` (val_top1 where none matches).

    >>> epoch_counterpart("final.val_loss"), epoch_counterpart("complexity.macs")
    ('val_loss', 'val_top1')
    """
    section, _, metric = name.partition(".")
    if section in ("best", "final") and metric.startswith("val_"):
        return metric
    return "val_top1"


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["van-ablate"] = __import__("van_ablate").__version__
    return out


def git_commit(source: Path = Path(__file__)) -> str | None:
    """The commit of the checkout that tracks ``source`` (this file), ``+dirty`` with local changes.

    None outside a git checkout, and for an installed copy that only sits inside one (a wheel in
    a virtual environment under a repository): that checkout's commit is not the code that runs.
    """
    folder = Path(source).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=5)

    try:
        tracked = git("ls-files", "--error-unmatch", "--", Path(source).name)
        head = git("rev-parse", "HEAD")
        if tracked.returncode != 0 or head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def format_summary(doc: dict[str, Any], run_dir: Path, wandb_sync: str | None = None) -> str:
    """The one-screen end-of-run summary printed to the console."""
    from tabulate import tabulate

    lka, cx, best, final = doc["lka"], doc["complexity"], doc["best"], doc["final"]
    parts = [p for p in ("dw_conv", "dwd_conv", "pw_conv") if lka[p]]
    rows = [
        ("status", doc["status"] + (f" ({doc['reason']})" if doc["reason"] else "")),
        ("run dir", str(run_dir)),
        (
            "model",
            f"{doc['model']}  ablations: {', '.join(doc['ablations']) or '-'}  "
            f"layer_scale: {doc['layer_scale']}",
        ),
        (
            "LKA",
            f"K={lka['kernel_size']} d={lka['resolved_dilation']}  "
            f"{'dense' if lka['dense'] else ' + '.join(parts)}  gate={lka['gate']}  "
            f"combine={lka['combine']}",
        ),
        (
            "data",
            f"{doc['data']['name']}: {doc['data']['num_classes']} classes, "
            f"{doc['data']['img_size']} px, {doc['data']['num_train']} train / "
            f"{doc['data']['num_val']} val",
        ),
    ]
    if cx:
        rows.append(
            (
                "params / MACs",
                f"{cx['params'] / 1e6:.3f} M / {cx['macs'] / 1e9:.4f} G "
                f"(counted {cx['params_counted'] / 1e6:.3f} M / {cx['macs_counted'] / 1e9:.4f} G)",
            )
        )
    epochs = doc["epochs"]
    if best is not None:
        rows += [
            (
                "epochs",
                f"{len(epochs)}/{doc['setup']['total_epochs']}, best val_top1 "
                f"{best['val_top1']:.2f} % at epoch {best['epoch']}",
            ),
            (
                "final",
                f"val_top1 {final['val_top1']:.2f} %  val_top5 {final['val_top5']:.2f} %"
                f"  val_loss {final['val_loss']:.4f}  {final['images_per_sec']:.0f} img/s",
            ),
        ]
    names, values = doc["objective"]["names"], doc["objective"]["values"]
    rows += [
        ("objective", ", ".join(f"{n} = {v:.6g}" for n, v in zip(names, values, strict=True))),
        ("wall time", f"{doc['wall_time_s']:.1f} s"),
    ]
    if wandb_sync:
        rows.append(("W&B (offline)", wandb_sync))
    return tabulate(rows, tablefmt="plain")
