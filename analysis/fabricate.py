"""Small, schema-valid report inputs made on the spot: run directories and an Optuna study.

For the report tests and the report benchmark only: the runs are never trained, but every file
has the exact layout of contract (3) (results.json schema 1, checkpoint dict) and the complexity
figures are the real ones of :meth:`van_ablate.model_spec.ModelSpec.cost`, so what a report
shows from them is what it would show from real runs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from van_ablate.io import atomic_torch_save, atomic_write_json
from van_ablate.lka import LKASpec
from van_ablate.model_spec import ModelSpec
from van_ablate.paper import PRESETS
from van_ablate.results import SCHEMA_VERSION, summarize_epochs
from van_ablate.sweep.coordinator import SWEEP

DATA = {"name": "builtin", "num_classes": 10, "img_size": 64}


@functools.cache
def _complexity(model: str, spec: LKASpec, layer_scale: bool, img_size: int, num_classes: int):
    return ModelSpec(model, spec, layer_scale, img_size=img_size, num_classes=num_classes).cost()


def make_results(
    run_id: str,
    *,
    preset: str = "baseline",
    seed: int = 0,
    top1: float = 50.0,
    model: str = "van_proxy",
    epochs: int = 3,
    status: str = "completed",
    trial: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A results.json dict (contract (3)) for ``preset`` whose best and final top-1 is ``top1``.

    >>> make_results("r0", preset="k7", seed=1, top1=61.5)["lka"]["kernel_size"]
    7
    """
    spec, layer_scale = PRESETS[preset]["lka"], PRESETS[preset]["layer_scale"]
    data = {**DATA, **(data or {})}
    complexity = _complexity(model, spec, layer_scale, data["img_size"], data["num_classes"])
    curve = [
        {
            "epoch": e,
            "train_loss": 2.3 - 1.5 * e / epochs,
            "val_loss": 2.3 - 1.2 * e / epochs,
            "val_top1": top1 * e / epochs,
            "val_top5": min(100.0, 2 * top1 * e / epochs),
            "lr": 1e-3 * (1 - (e - 1) / epochs),
            "images_per_sec": 400.0,
            "time_s": 5.0,
        }
        for e in range(1, epochs + 1)
    ]
    best, final = summarize_epochs(curve)
    config = {"model": {"name": model}, "lka": spec.to_dict(), "seed": seed, "data": data}
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": status,
        "reason": None if status == "completed" else f"fabricated {status} run",
        "model": model,
        "presets": [preset],
        "lka": spec.to_dict(),
        "layer_scale": layer_scale,
        "data": data,
        "seed": seed,
        "complexity": dict(complexity),
        "epochs": curve,
        "best": best,
        "final": final,
        "objective": {"names": ["best.val_top1"], "values": [top1]},
        "diverged": None,
        "trial": trial,
        "wall_time_s": 5.0 * epochs,
        "git_commit": None,
        "versions": {"torch": "fabricated"},
        "config": config,
    }


def write_run(root: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results`` as ``root/<run_id>/results.json``; returns the run directory."""
    run_dir = Path(root) / results["run_id"]
    atomic_write_json(run_dir / "results.json", results)
    return run_dir


def write_checkpoint(run_dir: str | Path, *, seed: int = 0, which: str = "last") -> Path:
    """A contract (3) checkpoint of a freshly initialised model for the run in ``run_dir``."""
    import timm
    import torch

    results = json.loads((Path(run_dir) / "results.json").read_text())
    torch.manual_seed(seed)
    model_args = {
        "model_name": results["model"],
        "lka": {k: v for k, v in results["lka"].items() if k != "resolved_dilation"},
        "layer_scale": results["layer_scale"],
        "num_classes": results["data"]["num_classes"],
    }
    model = timm.create_model(**model_args)
    ckpt = {
        "model": model.state_dict(),
        "optimizer": None,
        "scheduler": None,
        "ema": None,
        "epoch": len(results["epochs"]),
        "step": 10 * len(results["epochs"]),
        "config": results["config"],
        "rng": None,
        "model_args": model_args,  # what van_ablate.runs.load_run_model rebuilds the model from
    }
    return atomic_torch_save(Path(run_dir) / "checkpoints" / f"{which}.pt", ckpt)


def make_study(
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    runs: Sequence[dict[str, Any]],
    results_root: str | Path | None = None,
) -> optuna.Study:
    """A finished two-objective study (max best.val_top1, min complexity.macs), one trial a run.

    Laid out as the sweeper leaves one: objective names in the study's sweep system attribute,
    and with ``results_root`` each trial's ``run_dir`` user attribute at its run there.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.get_storage(storage)
    study = optuna.create_study(
        study_name=study_name, storage=storage, directions=["maximize", "minimize"]
    )
    objectives = ["best.val_top1", "complexity.macs"]
    study_id = storage.get_study_id_from_name(study_name)
    storage.set_study_system_attr(study_id, SWEEP, {"objectives": objectives})
    dist = {
        "kernel_size": optuna.distributions.IntDistribution(3, 35),
        "dw_conv": optuna.distributions.CategoricalDistribution([True, False]),
    }
    trials = []
    for r in runs:
        attrs = {"status": r["status"], "macs": r["complexity"]["macs"]}
        if results_root is not None:
            attrs["run_dir"] = str(Path(results_root) / r["run_id"])
        trials.append(
            optuna.trial.create_trial(
                params={"kernel_size": r["lka"]["kernel_size"], "dw_conv": r["lka"]["dw_conv"]},
                distributions=dist,
                values=[r["best"]["val_top1"], r["complexity"]["macs"]],
                user_attrs=attrs,
            )
        )
    study.add_trials(trials)
    return study
