"""One training job, put together: config -> checkpoint to resume -> data, model, recipe ->
:class:`~van_ablate.train.loop.Trainer` (the loop) + :class:`~van_ablate.train.record.RunRecord`
(what the run leaves behind). Bad input fails here, before any file is written::

    results = run(cfg, run_dir, ablations=["k7"], resolved=config_dict, dist=DistEnv())
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch

from van_ablate.config import Config, check_memory, global_batch_steps, scaled_lr
from van_ablate.data.loaders import build_loaders
from van_ablate.errors import ConfigError
from van_ablate.model.keyed_init import init_keyed
from van_ablate.model.spec import ModelSpec
from van_ablate.train import checkpoint, distributed, hardware
from van_ablate.train.distributed import DistEnv
from van_ablate.train.loop import NonFinite, Trainer
from van_ablate.train.preemption import StopSignals
from van_ablate.train.recipe import build_recipe
from van_ablate.train.record import RunRecord

log = logging.getLogger(__name__)


def run(
    cfg: Config,
    run_dir: Path,
    *,
    ablations: list[str],
    resolved: dict[str, Any],
    dist: DistEnv | None = None,
) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir``; returns its results (also in results.json)."""
    dist = dist or DistEnv()
    t, run_dir = cfg.train, Path(run_dir)
    device = distributed.setup(t.device, dist)
    check_memory(cfg, device)  # before the data, the model or any file takes memory or disk
    resume = checkpoint.resume_from(run_dir, cfg.resume)
    if resume is not None:
        checkpoint.check_same_config(resume[1], resolved, resume[0])
    global_batch, accum = global_batch_steps(t, dist.world_size)
    lr = scaled_lr(t, global_batch)
    _set_determinism(t.deterministic)

    train_loader, val_loader, data = build_loaders(
        cfg.data,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        seed=cfg.seed,
        distributed=dist.world_size > 1,
        world_size=dist.world_size,
        rank=dist.rank,
        device=str(device),
    )
    spec = ModelSpec.from_config(
        cfg.model, cfg.lka, num_classes=data.num_classes, img_size=data.img_size
    )
    model = spec.build()
    # Paired seeds: the initial weights are a function of (seed, parameter name, shape), the
    # same on every rank and in every row that has the parameter; what follows the model starts
    # from the seed alone, whatever the row's constructors drew.
    init_keyed(model, cfg.seed)
    timm.utils.random_seed(cfg.seed, rank=0)
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    recipe = build_recipe(
        model,
        t,
        lr=lr,
        num_classes=data.num_classes,
        batches_per_epoch=len(train_loader),
        accum_steps=accum,
    )
    complexity = spec.cost() if dist.is_main else {}
    description = {
        "model": spec,
        "data": dataclasses.asdict(data),
        "complexity": complexity,
        "setup": {
            "device": str(device),
            "world_size": dist.world_size,
            "global_batch": global_batch,
            "accum_steps": accum,
            "lr": lr,
            "total_epochs": recipe.total_epochs,
            "updates_per_epoch": recipe.updates_per_epoch,
            **hardware.describe(channels_last=t.channels_last),
        },
    }
    record = RunRecord(
        cfg,
        run_dir,
        ablations=list(ablations),
        resolved=resolved,
        dist=dist,
        description=description,
    )
    if dist.is_main:
        _check_writable(run_dir)
    trainer = Trainer(
        t,
        model,
        recipe,
        (train_loader, val_loader),
        num_classes=data.num_classes,
        device=device,
        dist=dist,
        accum_steps=accum,
    )
    start_epoch = 0
    if resume is not None:
        source, ckpt = resume
        trainer.load_state_dict(ckpt, cfg.seed)
        record.restore(ckpt, source)
        start_epoch = ckpt["epoch"]
        where = f"after epoch {start_epoch}"
        if trainer.batch:
            where += f" and {trainer.batch} batches of epoch {start_epoch + 1}"
        log.info("resuming %s %s", source, where)
    elif cfg.resume == "never" and dist.is_main:
        moved = checkpoint.supersede(run_dir)
        if moved:
            log.info("resume=never: previous run moved to %s", moved)
    return _fit(trainer, record, start_epoch, cfg.seed, dist)


def _fit(
    trainer: Trainer, record: RunRecord, start_epoch: int, seed: int, dist: DistEnv
) -> dict[str, Any]:
    with StopSignals() as stop:  # a signal from here on is acted on at the next step
        record.begin()
        if trainer.rng is None:  # a fresh run: per-rank streams, independent of the setup above
            timm.utils.random_seed(seed, rank=dist.rank)
        try:
            pruned = trainer.fit(record, start_epoch, stop)
        except NonFinite as err:
            record.diverge(err.step, err.last_finite)
        except BaseException as err:
            # After a stop signal the record has written the checkpoint and results.json; the
            # signal's previous handler (submitit's) may be ending the process its own way.
            if not stop.handed_over:
                record.finish("failed", f"{type(err).__name__}: {err}", exit_code=1)
            raise
        finally:
            distributed.teardown()
    if pruned:
        epoch = len(record.epochs)
        return record.finish("pruned", f"pruned by Optuna after epoch {epoch}")
    return record.finish("completed", None)


def _set_determinism(deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise ConfigError(
            "hydra.run.dir", str(run_dir), f"must be a writable directory ({err.strerror})"
        ) from err
