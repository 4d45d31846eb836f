"""The training loop: one model, its data and recipe; optimizer steps, epochs and evaluation.

Implements the paper's ImageNet protocol (Sec. 4.1; reference: imagenet_recipe) with timm's
parts (:mod:`van_ablate.train.recipe`), plus bf16 autocast, channels_last, torch.compile, gradient
clipping, gradient accumulation to a global batch, and DistributedDataParallel under torchrun
(:mod:`van_ablate.train.distributed`). What a run leaves behind (results.json, checkpoints, W&B, the
Optuna trial) is :class:`van_ablate.train.record.RunRecord`'s; :mod:`van_ablate.train.job` puts both
together. On SIGTERM / SIGUSR2 the loop stops at the next optimizer step, has a mid-epoch
checkpoint written and raises :class:`van_ablate.errors.Preempted`::

    with StopSignals() as stop:
        Trainer(cfg.train, model, recipe, loaders, ...).fit(record, start_epoch=0, stop=stop)
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.utils import dispatch_clip_grad
from torch import nn
from tqdm import tqdm

from van_ablate.config import TrainConfig
from van_ablate.train import checkpoint, distributed
from van_ablate.train.distributed import DistEnv
from van_ablate.train.preemption import StopSignals
from van_ablate.train.recipe import Recipe, autocast


class NonFinite(Exception):
    """A non-finite training loss or weights; carries the step and the last finite loss."""

    def __init__(self, step: int, last_finite: dict[str, Any]):
        self.step, self.last_finite = step, last_finite


class Trainer:
    """Steps one model through its epochs; :meth:`state_dict` is what a checkpoint resumes."""

    def __init__(
        self,
        train: TrainConfig,
        model: nn.Module,
        recipe: Recipe,
        loaders: tuple[Any, Any],
        *,
        num_classes: int,
        device: torch.device,
        dist: DistEnv,
        accum_steps: int,
    ):
        self.cfg, self.model, self.recipe, self.dist = train, model, recipe, dist
        self.train_loader, self.val_loader = loaders
        self.num_classes, self.device, self.accum = num_classes, device, accum_steps
        self.memory_format = torch.channels_last if train.channels_last else torch.contiguous_format
        self.step = 0  # optimizer updates so far
        self.batch = 0  # micro-batches done of the current epoch (non-zero after a mid-epoch stop)
        self.partial = {"loss_sum": 0.0, "seen": 0}  # the current epoch's train loss so far
        self.rng: dict[str, Any] | None = None  # this rank's random state to continue from
        self.last_finite: dict[str, Any] = {}
        self.net = _wrap(model, train.compile, device, dist)

    def fit(self, record: Any, start_epoch: int, stop: StopSignals) -> bool:
        """Train epochs ``start_epoch..`` to the end; True if the trial was pruned.

        ``record`` is told each finished epoch (``epoch_done``, which answers whether the
        trial is pruned), each logged step (``log_step``) and a stop signal (``stopped``);
        ``stop`` is polled after every optimizer step and every epoch.
        """
        for epoch in range(start_epoch, self.recipe.total_epochs):
            if record.epoch_done(self._epoch(epoch, record, stop), self):
                return True
            last_epoch = epoch + 1 == self.recipe.total_epochs
            if not last_epoch and stop.agreed(self.dist, self.device):
                record.stopped_after_epoch(stop.signum)  # came during evaluation; epoch saved
                stop.hand_over()
        return False

    def _epoch(self, epoch: int, record: Any, stop: StopSignals) -> dict[str, Any]:
        if self.rng is not None:
            checkpoint.set_rng_state(self.rng)
        self.train_loader.set_epoch(epoch)  # the order depends on (seed, epoch) only
        started = time.time()
        train_loss, images_per_sec = self._train_one_epoch(epoch, record, stop)
        distributed.sync_batch_norm_stats(self.model, self.dist)
        val = self.evaluate(self.model)
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            **val,
            "lr": self.recipe.lr,
            "images_per_sec": images_per_sec,
        }
        if self.recipe.ema is not None:
            ema = self.evaluate(self.recipe.ema.module)
            row |= {f"ema_{k}": v for k, v in ema.items()}
        if self.recipe.scheduler is not None:
            self.recipe.scheduler.step(epoch + 1)
        if not (math.isfinite(val["val_loss"]) and _all_finite(self.model)):
            raise NonFinite(self.step, self.last_finite)
        row["time_s"] = time.time() - started
        self.batch, self.partial = 0, {"loss_sum": 0.0, "seen": 0}
        self.rng = checkpoint.rng_state()
        return row

    def _train_one_epoch(self, epoch: int, record: Any, stop: StopSignals) -> tuple[float, float]:
        recipe, n_batches, first = self.recipe, len(self.train_loader), self.batch
        self.net.train()
        batches = iter(self.train_loader)
        # timm's loaders cannot start mid-epoch: skip the batches a stopped run had done.
        for _ in range(first):
            next(batches)
        if first and self.rng is not None:
            checkpoint.set_rng_state(self.rng)
        seen_before = self.partial["seen"]
        started = window_start = time.time()
        window_loss, window_seen = 0.0, 0
        bar = tqdm(
            total=n_batches * self.cfg.batch_size * self.dist.world_size,
            initial=seen_before,
            desc=f"epoch {epoch + 1}/{self.recipe.total_epochs}",
            unit="img",
            leave=False,
            dynamic_ncols=True,
            disable=not self.dist.is_main or None,
        )
        recipe.optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(batches, start=first):
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
                with autocast(self.cfg.precision, self.device):
                    loss = recipe.loss_fn(self.net(x), y)
                value = distributed.mean(loss.detach(), self.dist)
                if not math.isfinite(value):
                    bar.close()
                    raise NonFinite(self.step + 1, self.last_finite)
                (loss / group_size).backward()
            self.last_finite = {"step": self.step + 1, "train_loss": value}
            n = len(x) * self.dist.world_size
            self.partial["loss_sum"] += value * n
            self.partial["seen"] += n
            window_loss, window_seen = window_loss + value * n, window_seen + n
            bar.update(n)
            if not update:
                continue
            self._optimizer_step()
            self.batch = i + 1
            bar.set_postfix(loss=f"{value:.3f}", lr=f"{recipe.lr:.2e}")
            now = time.time()
            window = {
                "loss": window_loss / window_seen,
                "lr": recipe.lr,
                "images_per_sec": window_seen / max(now - window_start, 1e-9),
                "epoch": epoch + (i + 1) / n_batches,
            }
            if record.log_step(self.step, window):
                window_loss, window_seen, window_start = 0.0, 0, now
            if stop.agreed(self.dist, self.device) and self.batch < n_batches:
                bar.close()
                self.rng = checkpoint.rng_state()
                record.stopped(self, stop.signum)
                stop.hand_over()
        bar.close()
        seen = self.partial["seen"]
        rate = (seen - seen_before) / max(time.time() - started, 1e-9)
        return self.partial["loss_sum"] / max(seen, 1), rate

    def _optimizer_step(self) -> None:
        recipe = self.recipe
        if self.cfg.clip_grad is not None:
            dispatch_clip_grad(self.model.parameters(), self.cfg.clip_grad)
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
        k = min(5, self.num_classes)
        # loss sum, top-1 hits, top-k hits, images; counts (not timm's per-batch percentages)
        # so ranks can be summed exactly.
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y in self.val_loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            y = y.to(self.device, non_blocking=True)
            with autocast(self.cfg.precision, self.device):
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

    def state_dict(self) -> dict[str, Any]:
        """The loop's part of a checkpoint (``rng`` is this rank's; the record gathers ranks)."""
        recipe = self.recipe
        return {
            "model": self.model.state_dict(),
            "optimizer": recipe.optimizer.state_dict(),
            "scheduler": recipe.scheduler.state_dict() if recipe.scheduler is not None else None,
            "ema": recipe.ema.module.state_dict() if recipe.ema is not None else None,
            "step": self.step,
            "batch": self.batch,
            "partial": dict(self.partial),
            "rng": self.rng,
        }

    def load_state_dict(self, ckpt: dict[str, Any], seed: int) -> None:
        """Continue from a checkpoint; ``seed`` reseeds when the world size changed."""
        self.model.load_state_dict(ckpt["model"])
        recipe = self.recipe
        recipe.optimizer.load_state_dict(ckpt["optimizer"])
        if recipe.scheduler is not None and ckpt["scheduler"] is not None:
            recipe.scheduler.load_state_dict(ckpt["scheduler"])
        if recipe.ema is not None and ckpt["ema"] is not None:
            recipe.ema.module.load_state_dict(ckpt["ema"])
        self.step = ckpt["step"]
        states = ckpt["rng"]
        # Same world size: each rank continues its own streams (and a stopped epoch where it
        # stopped); otherwise the epoch starts over under a fresh seed per epoch.
        if len(states) == self.dist.world_size:
            self.rng = states[self.dist.rank]
            self.batch = ckpt.get("batch", 0)
            self.partial = dict(ckpt.get("partial") or {"loss_sum": 0.0, "seen": 0})
        else:
            timm.utils.random_seed(seed + ckpt["epoch"], rank=self.dist.rank)


def _wrap(model: nn.Module, compile_: bool, device: torch.device, dist: DistEnv) -> nn.Module:
    net = model
    if dist.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        # A depth-wise weight's gradient may come back with another stride on its size-1
        # axis; DDP warns though the layout is equivalent.
        warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return torch.compile(net) if compile_ else net


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
