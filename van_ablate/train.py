"""The training job: train and evaluate one LKA variant, resumably, and report it.

Implements the paper's ImageNet protocol (Sec. 4.1; reference: imagenet_recipe) with timm's
parts (:mod:`van_ablate.recipe`), plus bf16 autocast, channels_last, torch.compile, gradient
clipping, gradient accumulation to a global batch, and DistributedDataParallel under torchrun
(:mod:`van_ablate.distributed`). Each epoch ends with an atomic checkpoint and ``results.json``;
a non-finite loss stops the run with status ``diverged`` and leaves the last good checkpoint::

    results = Trainer(cfg, run_dir, presets=["k7"], resolved=config_dict).fit()
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
import yaml
from timm.utils import dispatch_clip_grad
from torch import nn
from tqdm import tqdm

from van_ablate import checkpoint, distributed, results
from van_ablate.config import Config, global_batch_steps, scaled_lr
from van_ablate.data import build_loaders
from van_ablate.distributed import DistEnv
from van_ablate.errors import EXIT_DIVERGED, ConfigError, Diverged
from van_ablate.io import atomic_write_json, atomic_write_text
from van_ablate.model_spec import ModelSpec
from van_ablate.recipe import autocast, build_recipe
from van_ablate.runs import model_kwargs

log = logging.getLogger(__name__)


class NonFinite(Exception):
    """A non-finite training loss; carries where it happened."""

    def __init__(self, step: int):
        self.step = step


class Trainer:
    """One run: sets everything up (failing before any write on bad input), then :meth:`fit`."""

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        *,
        presets: list[str],
        resolved: dict[str, Any],
        dist: DistEnv | None = None,
    ):
        self.cfg, self.run_dir, self.presets, self.resolved, self.dist = (
            cfg,
            Path(run_dir),
            list(presets),
            resolved,
            dist or DistEnv(),
        )
        self.started = time.time()
        t = cfg.train
        dist = self.dist
        self.device = distributed.setup(t.device, dist)
        source = checkpoint.resume_source(self.run_dir, cfg.resume)
        ckpt = checkpoint.load(source) if source else None
        if ckpt is not None:
            checkpoint.check_same_config(ckpt, resolved, source)
        self.global_batch, self.accum = global_batch_steps(t, dist.world_size)
        self.lr = scaled_lr(t, self.global_batch)
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = not t.deterministic
        timm.utils.random_seed(cfg.seed, rank=0)  # identical model init on every rank

        self.train_loader, self.val_loader, self.data = build_loaders(
            cfg.data,
            batch_size=t.batch_size,
            eval_batch_size=t.eval_batch_size,
            seed=cfg.seed,
            distributed=dist.world_size > 1,
            world_size=dist.world_size,
            rank=dist.rank,
            device=str(self.device),
        )
        m = cfg.model
        self.model_args = {
            "model_name": m.name,
            "lka": dataclasses.asdict(cfg.lka_spec),
            "layer_scale": m.layer_scale,
            "drop_path_rate": m.drop_path_rate,
            "num_classes": self.data.num_classes,
            "dims": m.dims,
            "depths": m.depths,
            "mlp_ratios": m.mlp_ratios,
        }
        self.model = timm.create_model(m.name, **model_kwargs(self.model_args))
        self.model_spec = ModelSpec.from_config(
            m, cfg.lka_spec, num_classes=self.data.num_classes, img_size=self.data.img_size
        )
        self.complexity = self.model_spec.cost() if dist.is_main else {}
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.recipe = build_recipe(
            self.model,
            t,
            lr=self.lr,
            num_classes=self.data.num_classes,
            batches_per_epoch=len(self.train_loader),
            accum_steps=self.accum,
        )
        self.num_epochs = self.recipe.num_epochs

        self.epochs: list[dict[str, Any]] = []
        self.start_epoch = self.step = 0
        self.wall_before = 0.0
        self.run_id = uuid.uuid4().hex[:8]
        self.rng: dict[str, Any] | None = None  # this rank's random state at the last epoch end
        self.last_finite: dict[str, Any] = {}
        self.diverged: dict[str, Any] | None = None
        self.git_commit = results.git_commit() if dist.is_main else None
        if dist.is_main:
            _check_writable(self.run_dir)
        if ckpt is not None:
            self._restore(ckpt)
            log.info("resuming %s after epoch %d", source, self.start_epoch)
        elif cfg.resume == "never" and dist.is_main:
            moved = checkpoint.supersede(self.run_dir)
            if moved:
                log.info("resume=never: previous run moved to %s", moved)

        self.net: nn.Module = self.model
        if dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # A depth-wise weight's gradient may come back with another stride on its size-1
            # axis; DDP warns though the layout is equivalent.
            warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if t.compile:
            self.net = torch.compile(self.net)
        self.wandb = None
        self.results: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the final results (also in ``results.json``)."""
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.resolved))
            self._start_wandb()
        self._write_results("running")
        if self.rng is None:  # a fresh run: per-rank streams, independent of the setup above
            timm.utils.random_seed(self.cfg.seed, rank=self.dist.rank)
        try:
            for epoch in range(self.start_epoch, self.num_epochs):
                record = self._epoch(epoch)
                if self._report_trial(record):
                    return self._finish("pruned", f"pruned by Optuna after epoch {epoch + 1}")
        except NonFinite as err:
            return self._diverged(len(self.epochs) + 1, err.step)
        except BaseException as err:
            self._finish("failed", f"{type(err).__name__}: {err}", exit_code=1)
            raise
        finally:
            distributed.teardown()
        return self._finish("completed", None)

    def _epoch(self, epoch: int) -> dict[str, Any]:
        if self.rng is not None:
            checkpoint.set_rng_state(self.rng)
        _set_epoch(self.train_loader, epoch)
        started = time.time()
        train_loss, images_per_sec = self._train_one_epoch(epoch)
        distributed.sync_batch_norm_stats(self.model, self.dist)
        val = self.evaluate(self.model)
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **val,
            "lr": self.recipe.lr,
            "images_per_sec": images_per_sec,
        }
        if self.recipe.ema is not None:
            ema = self.evaluate(self.recipe.ema.module)
            record |= {f"ema_{k}": v for k, v in ema.items()}
        if self.recipe.scheduler is not None:
            self.recipe.scheduler.step(epoch + 1)
        if not (math.isfinite(val["val_loss"]) and _all_finite(self.model)):
            raise NonFinite(self.step)
        record["time_s"] = time.time() - started
        self.epochs.append(record)
        self.rng = checkpoint.rng_state()
        rng_all_ranks = distributed.gather(self.rng, self.dist)
        if self.dist.is_main:
            self._save_checkpoints(epoch + 1, rng_all_ranks)
            log.info(_epoch_line(record, self.num_epochs))
            if self.wandb is not None:
                self.wandb.log_epoch(record)
        self._write_results("running")
        return record

    def _train_one_epoch(self, epoch: int) -> tuple[float, float]:
        t, recipe = self.cfg.train, self.recipe
        self.net.train()
        n_batches = len(self.train_loader)
        loss_sum = window_loss = 0.0
        seen = window_seen = 0
        started = window_start = time.time()
        bar = tqdm(
            total=n_batches * t.batch_size * self.dist.world_size,
            desc=f"epoch {epoch + 1}/{self.num_epochs}",
            unit="img",
            leave=False,
            dynamic_ncols=True,
            disable=not self.dist.is_main or None,
        )
        recipe.optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(self.train_loader):
            group_end = min((i // self.accum + 1) * self.accum, n_batches)
            group_size = group_end - (i // self.accum) * self.accum
            update = i + 1 == group_end
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            y = y.to(self.device, non_blocking=True)
            x, y = recipe.mix(x, y)
            sync = contextlib.nullcontext()
            if not update and isinstance(self.net, nn.parallel.DistributedDataParallel):
                sync = self.net.no_sync()
            with sync:
                with autocast(t.precision, self.device):
                    loss = recipe.loss_fn(self.net(x), y)
                value = distributed.mean(loss.detach(), self.dist)
                if not math.isfinite(value):
                    bar.close()
                    raise NonFinite(self.step + 1)
                (loss / group_size).backward()
            self.last_finite = {"step": self.step + 1, "train_loss": value}
            n = len(x) * self.dist.world_size
            loss_sum, seen = loss_sum + value * n, seen + n
            window_loss, window_seen = window_loss + value * n, window_seen + n
            bar.update(n)
            if update:
                self._optimizer_step()
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{recipe.lr:.2e}")
                if self.wandb is not None and self.step % self.cfg.logger.log_every_steps == 0:
                    now = time.time()
                    self.wandb.log_step(
                        self.step,
                        {
                            "loss": window_loss / window_seen,
                            "lr": recipe.lr,
                            "images_per_sec": window_seen / max(now - window_start, 1e-9),
                            "epoch": epoch + (i + 1) / n_batches,
                        },
                    )
                    window_loss, window_seen, window_start = 0.0, 0, now
        bar.close()
        return loss_sum / max(seen, 1), seen / max(time.time() - started, 1e-9)

    def _optimizer_step(self) -> None:
        recipe = self.recipe
        if self.cfg.train.clip_grad is not None:
            dispatch_clip_grad(self.model.parameters(), self.cfg.train.clip_grad)
        recipe.optimizer.step()
        recipe.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if recipe.ema is not None:
            recipe.ema.update(self.model, step=self.step)
        if recipe.scheduler is not None:
            recipe.scheduler.step_update(num_updates=self.step)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation loss, top-1 and top-5 (percent), summed over every rank's share."""
        model.eval()
        k = min(5, self.data.num_classes)
        # loss sum, top-1 hits, top-k hits, images; counts (not timm's per-batch percentages)
        # so ranks can be summed exactly.
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in self.val_loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            y = y.to(self.device, non_blocking=True)
            with autocast(self.cfg.train.precision, self.device):
                logits = model(x)
            hits = logits.topk(k, dim=1).indices.eq(y[:, None])
            totals += torch.stack(
                [
                    F.cross_entropy(logits.float(), y, reduction="sum").double(),
                    hits[:, 0].sum().double(),
                    hits.any(dim=1).sum().double(),
                    torch.tensor(len(y), dtype=torch.float64, device=self.device),
                ]
            )
        loss, top1, topk, n = distributed.sum_(totals, self.dist).tolist()
        n = max(n, 1.0)
        return {"val_loss": loss / n, "val_top1": 100 * top1 / n, "val_top5": 100 * topk / n}

    # ------------------------------------------------------------------ helpers

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        recipe = self.recipe
        recipe.optimizer.load_state_dict(ckpt["optimizer"])
        if recipe.scheduler is not None and ckpt["scheduler"] is not None:
            recipe.scheduler.load_state_dict(ckpt["scheduler"])
        if recipe.ema is not None and ckpt["ema"] is not None:
            recipe.ema.module.load_state_dict(ckpt["ema"])
        self.start_epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.epochs = list(ckpt["epochs"])
        self.run_id, self.wall_before = ckpt["run_id"], ckpt["wall_time_s"]
        states = ckpt["rng"]
        # Same world size: each rank continues its own streams; otherwise a fresh seed per epoch.
        if len(states) == self.dist.world_size:
            self.rng = states[self.dist.rank]
        else:
            timm.utils.random_seed(self.cfg.seed + self.start_epoch, rank=self.dist.rank)

    def _save_checkpoints(self, epochs_done: int, rng: list[dict[str, Any]]) -> None:
        recipe = self.recipe
        state = {
            "model": self.model.state_dict(),
            "optimizer": recipe.optimizer.state_dict(),
            "scheduler": recipe.scheduler.state_dict() if recipe.scheduler is not None else None,
            "ema": recipe.ema.module.state_dict() if recipe.ema is not None else None,
            "epoch": epochs_done,
            "step": self.step,
            "config": self.resolved,
            "rng": rng,
            "model_args": self.model_args,
            "epochs": self.epochs,
            "run_id": self.run_id,
            "wall_time_s": self._wall_time(),
        }
        ckpt_dir = self.run_dir / "checkpoints"
        checkpoint.save(ckpt_dir / "last.pt", state)
        best, _ = results.summarize_epochs(self.epochs)
        if best["epoch"] == epochs_done:
            checkpoint.save(ckpt_dir / "best.pt", state)

    def _wall_time(self) -> float:
        return self.wall_before + time.time() - self.started

    def _report_trial(self, record: dict[str, Any]) -> bool:
        """Report the epoch to this job's Optuna trial; True when the pruner stops the run."""
        trial = self.cfg.trial
        if trial.storage is None:
            return False
        import optuna

        from van_ablate.trial import report_epoch

        pruned = False
        if self.dist.is_main:
            metric = results.epoch_counterpart(self.cfg.objective[0])
            try:
                report_epoch(trial, record["epoch"], record[metric])
            except optuna.TrialPruned:
                pruned = True
        return distributed.from_main(pruned, self.dist)

    def _diverged(self, epoch: int, step: int) -> dict[str, Any]:
        last_epoch = self.epochs[-1] if self.epochs else {}
        last = {k: v for k, v in last_epoch.items() if k.startswith("val_") or k == "epoch"}
        self.diverged = {"epoch": epoch, "step": step, "last_finite": self.last_finite | last}
        reason = f"loss became non-finite at epoch {epoch}, step {step}"
        self._finish("diverged", reason, exit_code=EXIT_DIVERGED)
        raise Diverged(epoch, step)

    def _finish(self, status: str, reason: str | None, exit_code: int = 0) -> dict[str, Any]:
        self._write_results(status, reason)
        if self.dist.is_main:
            sync = None
            if self.wandb is not None:
                sync = self.wandb.finish(_wandb_summary(self.results), exit_code=exit_code)
                self.wandb = None
            print(results.format_summary(self.results, self.run_dir, sync), flush=True)
        return self.results

    def _start_wandb(self) -> None:
        lg = self.cfg.logger
        if lg.name != "wandb":
            return
        from van_ablate.wandb_logger import WandbLogger

        trial = self.cfg.trial
        group = trial.study_name or f"{self.cfg.model.name}/{'+'.join(self.presets) or 'default'}"
        self.wandb = WandbLogger(
            project=lg.project,
            entity=lg.entity,
            mode=lg.mode,
            run_dir=self.run_dir,
            run_id=self.run_id,
            name=self.run_dir.name,
            group=group,
            tags=[self.cfg.model.name, *self.presets, *lg.tags],
            config=self.resolved,
        )

    def _write_results(self, status: str, reason: str | None = None) -> None:
        cfg, trial = self.cfg, self.cfg.trial
        self.results = results.document(
            run_id=self.run_id,
            run_name=self.run_dir.name,
            status=status,
            reason=reason,
            model=cfg.model.name,
            presets=self.presets,
            lka=cfg.lka_spec,
            layer_scale=cfg.model.layer_scale,
            data=dataclasses.asdict(self.data),
            seed=cfg.seed,
            complexity=self.complexity,
            setup={
                "device": str(self.device),
                "world_size": self.dist.world_size,
                "global_batch": self.global_batch,
                "accum_steps": self.accum,
                "lr": self.lr,
                "epochs": self.num_epochs,
                "updates_per_epoch": self.recipe.updates_per_epoch,
            },
            epochs=self.epochs,
            objective=list(cfg.objective),
            diverged=self.diverged,
            trial=None if trial.storage is None else (trial.study_name, trial.number),
            wall_time_s=self._wall_time(),
            git_commit=self.git_commit,
            config=self.resolved,
        )
        if self.dist.is_main:
            atomic_write_json(self.run_dir / "results.json", self.results)


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise ConfigError(
            "hydra.run.dir", str(run_dir), f"must be a writable directory ({err.strerror})"
        ) from err


def _set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader which epoch starts, so its shuffle depends on (seed, epoch) only."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "loader", None)):
        if obj is not None and hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
            return


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _epoch_line(r: dict[str, Any], total: int) -> str:
    return (
        f"epoch {r['epoch']}/{total}  train_loss {r['train_loss']:.4f}  "
        f"val_loss {r['val_loss']:.4f}  val_top1 {r['val_top1']:.2f}  val_top5 {r['val_top5']:.2f}"
        f"  lr {r['lr']:.2e}  {r['images_per_sec']:.0f} img/s  {r['time_s']:.1f} s"
    )


def _wandb_summary(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("status", "reason", "best", "final", "complexity", "wall_time_s", "objective")
    return {k: doc[k] for k in keep if doc.get(k) is not None}
