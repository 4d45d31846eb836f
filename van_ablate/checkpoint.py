"""Checkpoints that let a killed run continue exactly where its last epoch ended.

A checkpoint is a dict ``{"model", "optimizer", "scheduler", "ema", "epoch", "step", "config",
"rng", ...}`` written atomically each epoch (``checkpoints/last.pt``, and ``best.pt`` at a new
best top-1). It holds every random state the next epoch draws from (torch, CUDA, numpy, Python),
so on CPU with deterministic settings a resumed run ends with the same metrics as one never
interrupted. The paper's runs last 310 epochs (reference: imagenet_recipe); this is what makes a
preempted one cheap.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from van_ablate.errors import ConfigError
from van_ablate.io import atomic_torch_save

# Keys that may differ between a checkpoint and the run continuing it: they change how a run is
# resumed, logged or scored, not what it trains.
RESUMABLE_DIFFERENCES = ("resume", "logger", "objective", "trial")
ARTIFACTS = ("checkpoints", "results.json", "config.yaml", "wandb")


def rng_state() -> dict[str, Any]:
    """Every global random state a training epoch draws from."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a kill mid-write leaves the previous file intact."""
    return atomic_torch_save(path, state)


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` (our own file: numpy RNG state needs pickle)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs.

    >>> config_diff({"train": {"lr": 1.0, "epochs": 2}}, {"train": {"lr": 2.0, "epochs": 2}})
    ['train.lr']
    """
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_diff(a, b, prefix=f"{path}.")
        elif a != b:
            out.append(path)
    return out


def check_same_config(ckpt: Mapping[str, Any], config: Mapping[str, Any], source: Path) -> None:
    """Refuse to continue a checkpoint written under another config, naming what differs."""
    old = {k: v for k, v in ckpt["config"].items() if k not in RESUMABLE_DIFFERENCES}
    new = {k: v for k, v in config.items() if k not in RESUMABLE_DIFFERENCES}
    diff = config_diff(old, new)
    if diff:
        shown = ", ".join(f"{k} ({_get(old, k)!r} -> {_get(new, k)!r})" for k in diff[:5])
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise ConfigError(
            "resume",
            str(source),
            f"checkpoint was written with another config: {shown}{more}; use the same settings, "
            "resume=never to start over, or another run directory",
        )


def resume_source(run_dir: Path, resume: str) -> Path | None:
    """The checkpoint to continue from: ``auto`` -> the run's last.pt if any, a path -> that."""
    if resume == "never":
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ConfigError("resume", resume, "must be auto, never, a checkpoint or a run directory")
    return path


def supersede(run_dir: Path) -> Path | None:
    """Move a previous run's artifacts to ``superseded/<time>/`` (for ``resume=never``)."""
    present = [run_dir / name for name in ARTIFACTS if (run_dir / name).exists()]
    if not present:
        return None
    dest = run_dir / "superseded" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for path in present:
        shutil.move(str(path), dest / path.name)
    return dest


def _get(node: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
