"""The training job's config schema, and the one place it is checked.

Hydra composes ``conf/`` onto :class:`Config` (registered as ``base_config``), so unknown keys
and wrong types fail at composition; :func:`validate` then checks values and the ablations
(paper Table 3, the kernel-size and LayerScale tables) and returns plain dataclasses that the
rest of the code trusts::

    cfg = validate(dict_config, ablations=["no_dw_conv", "sigmoid"])
    cfg.lka  # LKASpec(dw_conv=False, gate='sigmoid', ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional  # noqa: UP035  (OmegaConf reads these annotations)

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from timm.optim import list_optimizers

from van_ablate import checks
from van_ablate.data.loaders import DataConfig
from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKASpec
from van_ablate.model.spec import ModelConfig, ModelSpec
from van_ablate.model.van import ARCHS
from van_ablate.paper.ablation import (
    CONF_PACKAGE as CONF_PACKAGE,  # where the entry point finds conf/
)
from van_ablate.paper.ablation import check_ablations
from van_ablate.results import OBJECTIVE_FIELDS

PRECISIONS = ("fp32", "bf16")
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2}  # per element of an activation, by train.precision
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("cosine", "tanh", "step", "multistep", "poly", "constant", "none")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("auto", "online", "offline")


@dataclass
class TrainConfig:
    """``train`` group: the recipe (optimizer, schedule, regularisation, precision)."""

    epochs: int = 300
    cooldown_epochs: int = 0
    batch_size: int = 128  # per device and micro-step
    eval_batch_size: int = 128
    global_batch: Optional[int] = None  # noqa: UP045  (null: batch_size x devices, no accumulation)
    lr: float = 1e-3  # at lr_base_batch; scaled linearly to the global batch
    lr_base_batch: int = 1024
    opt: str = "adamw"
    weight_decay: float = 0.05
    sched: str = "cosine"
    sched_on_updates: bool = False
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    min_lr: float = 1e-6
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    label_smoothing: float = 0.1
    ema: bool = False
    ema_decay: float = 0.9998
    clip_grad: Optional[float] = None  # noqa: UP045
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    deterministic: bool = False


@dataclass
class LoggerConfig:
    """``logger`` group: W&B (``name: wandb``) or nothing (``name: none``)."""

    name: str = "wandb"
    project: str = "van-ablate"
    entity: Optional[str] = None  # noqa: UP045
    mode: str = "auto"
    log_every_steps: int = 10
    tags: List[str] = field(default_factory=list)  # noqa: UP006


@dataclass
class TrialConfig:
    """Filled by the sweeper per job: where this job's Optuna trial lives."""

    storage: Optional[str] = None  # noqa: UP045
    study_name: Optional[str] = None  # noqa: UP045
    number: Optional[int] = None  # noqa: UP045


@dataclass
class Config:
    """The whole job; ``conf/config.yaml`` lists the groups that fill it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lka: LKASpec = field(default_factory=LKASpec)  # checked when OmegaConf builds it
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    seed: int = 0
    objective: List[str] = field(default_factory=lambda: ["best.val_top1"])  # noqa: UP006
    resume: str = "auto"


def register_configs() -> None:
    """Put the schema in Hydra's ConfigStore as ``base_config`` (``conf/config.yaml`` uses it).

    Its nodes are the classes the code uses: :class:`~van_ablate.model.lka.LKASpec` for ``lka``,
    :class:`~van_ablate.model.spec.ModelConfig`, :class:`~van_ablate.data.loaders.DataConfig`,
    and the ones below.
    """
    ConfigStore.instance().store(name="base_config", node=Config)


def validate(cfg: DictConfig | Config, ablations: Sequence[str] = ()) -> Config:
    """Check every value Hydra's types cannot, and return the config as plain dataclasses.

    Raises :class:`ConfigError` naming the key, the value and what is allowed.
    """
    check_ablations(ablations)
    if isinstance(cfg, DictConfig):
        _check_keys(cfg, Config)
        cfg = OmegaConf.to_object(cfg)
    m, t, log = cfg.model, cfg.train, cfg.logger
    checks.one_of("model.name", m.name, ARCHS)
    # The model group's values and the image size it can take, checked now rather than after
    # the data is loaded.
    ModelSpec.from_config(m, cfg.lka, num_classes=0, img_size=cfg.data.img_size)
    for key in ("epochs", "batch_size", "eval_batch_size", "lr_base_batch"):
        checks.at_least(f"train.{key}", getattr(t, key), 1)
    for key in ("cooldown_epochs", "warmup_epochs"):
        checks.at_least(f"train.{key}", getattr(t, key), 0)
    if t.global_batch is not None:
        checks.at_least("train.global_batch", t.global_batch, 1)
    checks.above("train.lr", t.lr, 0)
    for key in ("weight_decay", "warmup_lr", "min_lr", "mixup", "cutmix"):
        checks.in_range(f"train.{key}", getattr(t, key), 0.0)
    for key in ("mixup_prob", "mixup_switch_prob"):
        checks.in_range(f"train.{key}", getattr(t, key), 0.0, 1.0)
    checks.in_range("train.label_smoothing", t.label_smoothing, 0.0, 1.0, high_open=True)
    checks.in_range("train.ema_decay", t.ema_decay, 0.0, 1.0, high_open=True)
    if t.clip_grad is not None:
        checks.above("train.clip_grad", t.clip_grad, 0, why="or null: no clipping")
    checks.one_of("train.opt", t.opt, list_optimizers())
    checks.one_of("train.sched", t.sched, SCHEDULES)
    checks.one_of("train.precision", t.precision, PRECISIONS)
    checks.one_of("train.device", t.device, DEVICES)
    checks.one_of("logger.name", log.name, LOGGERS)
    checks.one_of("logger.mode", log.mode, WANDB_MODES)
    checks.at_least("logger.log_every_steps", log.log_every_steps, 1)
    checks.at_least("seed", cfg.seed, 0)
    if not cfg.objective:
        raise ConfigError("objective", [], f"list one or more of {', '.join(OBJECTIVE_FIELDS)}")
    for name in cfg.objective:
        checks.one_of("objective", name, OBJECTIVE_FIELDS)
    if cfg.resume not in ("auto", "never") and not Path(cfg.resume).exists():
        raise ConfigError("resume", cfg.resume, "must be auto, never or an existing checkpoint")
    tr = cfg.trial
    if tr.storage is not None and (tr.study_name is None or tr.number is None):
        raise ConfigError("trial.storage", tr.storage, "needs trial.study_name and trial.number")
    return cfg


def check_memory(cfg: Config, device: torch.device) -> None:
    """Pre-flight, before anything is allocated: refuse a run whose training step cannot fit in
    the free memory of ``device`` (:meth:`ModelSpec.step_memory` against
    :func:`checks.available_memory`), naming ``data.img_size`` and ``train.batch_size``.

    The estimate counts module outputs, 0.86-0.90 of the activations autograd keeps for
    van_proxy and van_b0 at 32-64 px (the rest are elementwise products and sums), and no
    allocator overhead: a refused run could not have fitted, a run just below may still not.
    The head is sized for ``data.num_classes`` or, before the data says, 1000 classes.
    """
    t = cfg.train
    spec = ModelSpec.from_config(
        cfg.model, cfg.lka, num_classes=cfg.data.num_classes or 1000, img_size=cfg.data.img_size
    )
    # Weights, grads and AdamW's two moments, plus the EMA's copy.
    need = spec.step_memory(
        t.batch_size,
        activation_bytes=ACTIVATION_BYTES[t.precision],
        state_copies=4 + int(t.ema),
    )
    what = (
        f"with train.batch_size={t.batch_size} a training step of {spec.name} "
        f"({checks.nbytes(need.activations)} of {t.precision} activations, "
        f"{checks.nbytes(need.states)} of weights, grads and optimizer state)"
    )
    available = checks.available_memory(device)
    checks.fits_memory(
        "data.img_size", cfg.data.img_size, need.total, available, what=what, where=str(device)
    )


def global_batch_steps(train: TrainConfig, world_size: int) -> tuple[int, int]:
    """(global batch, micro-batches accumulated per optimizer step) on ``world_size`` devices.

    >>> global_batch_steps(TrainConfig(batch_size=128, global_batch=1024), world_size=1)
    (1024, 8)
    """
    per_step = train.batch_size * world_size
    if train.global_batch is None:
        return per_step, 1
    if train.global_batch % per_step:
        raise ConfigError(
            "train.global_batch",
            train.global_batch,
            f"must be a multiple of train.batch_size x devices = {per_step}",
        )
    return train.global_batch, train.global_batch // per_step


def scaled_lr(train: TrainConfig, global_batch: int) -> float:
    """The documented rule: lr grows linearly with the global batch, ``lr`` at ``lr_base_batch``.

    >>> scaled_lr(TrainConfig(lr=1e-3, lr_base_batch=1024), 256)
    0.00025
    """
    return train.lr * global_batch / train.lr_base_batch


def _check_keys(node: DictConfig, schema: type, prefix: str = "") -> None:
    """Refuse keys the schema lacks (a ``+key=value`` override can add them past Hydra)."""
    fields = {f.name: f.type for f in dataclasses.fields(schema)}
    for key in node:
        path = f"{prefix}{key}"
        if key not in fields:
            raise checks.unknown_key(path, node._get_node(key)._value(), fields)
        child_type = OmegaConf.get_type(node, key)
        if dataclasses.is_dataclass(child_type) and isinstance(node[key], DictConfig):
            _check_keys(node[key], child_type, f"{path}.")
