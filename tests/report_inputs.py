"""Report inputs made on the spot: run directories and an Optuna study, for the report tests.

The runs are never trained, but each ``results.json`` is written by the writer training uses
(:func:`van_ablate.results.document`, then :func:`van_ablate.io.atomic_write_json`), its ``config``
has every key of the job's schema (:class:`van_ablate.config.Config`), its ``data`` is what the
built-in data's loaders report (4 classes), and its complexity figures are the real ones of
:meth:`van_ablate.model.spec.ModelSpec.cost`: what a report shows from them is what it would
show from real runs. ``scripts/report_benchmark.py`` times the reports on the same inputs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from omegaconf import OmegaConf

from van_ablate import results
from van_ablate.config import Config
from van_ablate.data import builtin
from van_ablate.data.loaders import DataConfig, DataInfo
from van_ablate.io import atomic_torch_save, atomic_write_json
from van_ablate.model.lka import LKASpec
from van_ablate.model.spec import ModelSpec
from van_ablate.paper import ABLATIONS
from van_ablate.sweep.coordinator import SWEEP

IMAGES_PER_EPOCH = 4000  # the built-in data's default training split


@functools.cache
def _complexity(
    model: str, spec: LKASpec, layer_scale: bool, img_size: int, num_classes: int, dims: tuple
):
    return ModelSpec(
        model, spec, layer_scale, img_size=img_size, num_classes=num_classes, dims=dims
    ).cost()


def make_results(
    run_id: str,
    *,
    ablation: str = "baseline",
    seed: int = 0,
    top1: float = 50.0,
    model: str = "van_proxy",
    epochs: int = 3,
    status: str = "completed",
    trial: tuple[str, int] | None = None,
    data: dict[str, Any] | None = None,
    lka: LKASpec | None = None,
    dims: tuple[int, ...] | None = None,
    images_per_sec: float = 400.0,
) -> dict[str, Any]:
    """A results.json document for ``ablation`` whose best and final top-1 is ``top1``.

    ``data`` overrides keys of the ``data`` config group (the built-in data by default). ``lka``
    sets the LKA without an ablation, as a study sweeping ``lka.*`` does; ``dims`` the model's
    widths, as the nas study does. Every epoch trains at ``images_per_sec``.

    >>> make_results("r0", ablation="k7", seed=1, top1=61.5)["lka"]["kernel_size"]
    7
    """
    spec, layer_scale = ABLATIONS[ablation]["lka"], ABLATIONS[ablation]["layer_scale"]
    spec, ablations = (spec, [ablation]) if lka is None else (lka, [])
    dims = None if dims is None else tuple(dims)
    data_cfg = DataConfig(**(data or {}))
    info = DataInfo(
        data_cfg.name,
        data_cfg.num_classes or builtin.NUM_CLASSES,
        data_cfg.img_size,
        data_cfg.num_train,
        data_cfg.num_val,
    )
    config = OmegaConf.to_container(OmegaConf.structured(Config))
    config["model"].update(name=model, layer_scale=layer_scale)
    if dims is not None:
        config["model"]["dims"] = list(dims)
    config.update(lka=dataclasses.asdict(spec), seed=seed, data=dataclasses.asdict(data_cfg))
    batch = config["train"]["batch_size"]
    return results.document(
        run_id=run_id,
        run_name=f"{ablation}-s{seed}",
        status=status,
        reason=None if status == "completed" else f"made-up {status} run",
        model=ModelSpec(
            model,
            lka=spec,
            layer_scale=layer_scale,
            num_classes=info.num_classes,
            img_size=info.img_size,
            dims=dims,
        ),
        ablations=ablations,
        data=dataclasses.asdict(info),
        seed=seed,
        complexity=dict(
            _complexity(model, spec, layer_scale, info.img_size, info.num_classes, dims)
        ),
        setup={
            "device": "cpu",
            "world_size": 1,
            "global_batch": batch,
            "accum_steps": 1,
            "lr": config["train"]["lr"],
            "total_epochs": epochs,
            "updates_per_epoch": IMAGES_PER_EPOCH // batch,
            "threads": 2,
            "cpus_available": 2,
            "wait_policy": "PASSIVE",
            "channels_last": True,
        },
        epochs=_curve(top1, epochs, images_per_sec),
        objective=["best.val_top1"],
        diverged=None,
        trial=trial,
        wall_time_s=5.0 * epochs,
        git_commit=None,
        config=config,
    )


def _curve(top1: float, epochs: int, images_per_sec: float = 400.0) -> list[dict[str, Any]]:
    """Per-epoch records rising linearly to ``top1`` at the last epoch."""
    return [
        {
            "epoch": e,
            "train_loss": 2.3 - 1.5 * e / epochs,
            "val_loss": 2.3 - 1.2 * e / epochs,
            "val_top1": top1 * e / epochs,
            "val_top5": min(100.0, 2 * top1 * e / epochs),
            "lr": 1e-3 * (1 - (e - 1) / epochs),
            "images_per_sec": images_per_sec,
            "time_s": 5.0,
        }
        for e in range(1, epochs + 1)
    ]


def write_run(root: str | Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``root/<run_id>/results.json``, as training does; returns the run dir."""
    run_dir = Path(root) / doc["run_id"]
    atomic_write_json(run_dir / "results.json", doc)
    return run_dir


def write_checkpoint(run_dir: str | Path, *, seed: int = 0, which: str = "last") -> Path:
    """A checkpoint of a freshly initialised model for the run in ``run_dir``."""
    doc = json.loads((Path(run_dir) / "results.json").read_text())
    torch.manual_seed(seed)
    spec = ModelSpec(
        doc["model"],
        lka=LKASpec.from_any({k: v for k, v in doc["lka"].items() if k != "resolved_dilation"}),
        layer_scale=doc["layer_scale"],
        num_classes=doc["data"]["num_classes"],
    )
    model = spec.build()
    ckpt = {
        "model": model.state_dict(),
        "optimizer": None,
        "scheduler": None,
        "ema": None,
        "epoch": len(doc["epochs"]),
        "step": 10 * len(doc["epochs"]),
        "config": doc["config"],
        "rng": None,
        "model_spec": spec.to_dict(),  # what van_ablate.runs.load_run_model rebuilds the model from
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
    storage.set_study_system_attr(study_id, SWEEP, {"objective": objectives})
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


def non_dominated(points: list[tuple[float, float]]) -> set[tuple[float, float]]:
    """(MACs, top-1) pairs no other pair beats: as few or fewer MACs and as high or higher top-1,
    better in one. Every pair against every other, independent of the report's own sort."""
    return {
        (m, t)
        for m, t in points
        if not any(m2 <= m and t2 >= t and (m2, t2) != (m, t) for m2, t2 in points)
    }
