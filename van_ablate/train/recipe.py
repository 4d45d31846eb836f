"""The ``train`` group as timm parts: optimizer, schedule, mixup / cutmix, loss, EMA, precision.

The paper's recipe (Sec. 4.1; reference: imagenet_recipe) is timm's: AdamW without weight decay
on norms, biases and LayerScale (``create_optimizer_v2`` with the model's ``no_weight_decay``),
cosine with warmup and cooldown (``create_scheduler_v2``), ``Mixup`` with soft-target cross
entropy, label smoothing, and optionally ``ModelEmaV3``. Nothing here is written by hand except
the odd-batch case of mixup, which timm's Mixup refuses.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn

from van_ablate.config import TrainConfig


@dataclass
class Recipe:
    """Everything the loop steps besides the model."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # a timm Scheduler, or None for train.sched=none
    total_epochs: int  # train.epochs + train.cooldown_epochs
    updates_per_epoch: int
    loss_fn: nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    num_classes: int

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup / cutmix a batch (soft targets); unchanged without mixup."""
        if self.mixup is None:
            return x, y
        if len(x) % 2:  # timm's Mixup pairs images; an odd last batch gets smoothed labels only
            return x, mixup_target(y, self.num_classes, smoothing=self.mixup.label_smoothing)
        return self.mixup(x, y)

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group right now."""
        return self.optimizer.param_groups[0]["lr"]


def build_recipe(
    model: nn.Module,
    t: TrainConfig,
    *,
    lr: float,
    num_classes: int,
    batches_per_epoch: int,
    accum_steps: int,
) -> Recipe:
    """The recipe for ``model`` at learning rate ``lr`` (already scaled to the global batch)."""
    optimizer = create_optimizer_v2(model, opt=t.opt, lr=lr, weight_decay=t.weight_decay)
    updates_per_epoch = math.ceil(batches_per_epoch / accum_steps)
    scheduler, total_epochs = create_scheduler_v2(
        optimizer,
        sched=t.sched,
        num_epochs=t.epochs,
        warmup_epochs=t.warmup_epochs,
        warmup_lr=t.warmup_lr,
        min_lr=t.min_lr,
        cooldown_epochs=t.cooldown_epochs,
        step_on_epochs=not t.sched_on_updates,
        updates_per_epoch=updates_per_epoch,
    )
    mixup = None
    if (t.mixup > 0 or t.cutmix > 0) and t.mixup_prob > 0:
        mixup = Mixup(
            mixup_alpha=t.mixup,
            cutmix_alpha=t.cutmix,
            prob=t.mixup_prob,
            switch_prob=t.mixup_switch_prob,
            label_smoothing=t.label_smoothing,
            num_classes=num_classes,
        )
    if mixup is not None:
        loss_fn: nn.Module = SoftTargetCrossEntropy()
    elif t.label_smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(t.label_smoothing)
    else:
        loss_fn = nn.CrossEntropyLoss()
    ema = ModelEmaV3(model, decay=t.ema_decay) if t.ema else None
    return Recipe(
        optimizer, scheduler, total_epochs, updates_per_epoch, loss_fn, mixup, ema, num_classes
    )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision="bf16"`` (CUDA or CPU), nothing for fp32."""
    enabled = precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
