"""Checkpoints that let a killed run continue exactly where its last epoch ended.

A checkpoint is a dict ``{"model", "optimizer", "scheduler", "ema", "epoch", "batch", "step",
"config", "rng", ...}`` written atomically at each epoch's end and on a stop signal mid-epoch
(``checkpoints/last.pt``; the one it replaces becomes ``previous.pt``; ``best.pt`` at a new best
top-1). ``epoch`` counts finished epochs and ``batch`` the micro-batches done of the next one
(0 at an epoch's end). It holds every random state the rest of the run draws from (torch, CUDA,
numpy, Python), so on CPU with deterministic settings a resumed run ends with the same metrics as
one never interrupted. The paper's runs last 310 epochs (reference: imagenet_recipe); this is
what makes a preempted one cheap. A damaged ``last.pt`` falls back to ``previous.pt``, then
``best.pt``, with a warning.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from van_ablate import checks
from van_ablate.checks import first_line
from van_ablate.errors import ConfigError
from van_ablate.io import atomic_torch_save

# Keys that may differ between a checkpoint and the run continuing it: they change how a run is
# resumed, logged or scored, not what it trains.
RESUMABLE_DIFFERENCES = ("resume", "logger", "objective", "trial")
ARTIFACTS = ("checkpoints", "results.json", "config.yaml", "wandb")
LAST, PREVIOUS, BEST = "last.pt", "previous.pt", "best.pt"
# Newest first: where a resumed run looks, in order, for a readable checkpoint.
RESUME_ORDER = (LAST, PREVIOUS, BEST)
REQUIRED_KEYS = ("model", "epoch", "step", "config")

log = logging.getLogger(__name__)


class Unreadable(Exception):
    """A file that is not a readable van-ablate checkpoint; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


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


def save_last(ckpt_dir: Path, state: dict[str, Any], keep_previous: bool = True) -> Path:
    """Write ``last.pt`` atomically and keep the checkpoint it replaces as ``previous.pt``.

    At every moment ``last.pt`` or ``previous.pt`` is a complete checkpoint. With
    ``keep_previous=False`` (the present ``last.pt`` is damaged) ``previous.pt`` stays as it is.
    """
    last = ckpt_dir / LAST
    new = save(ckpt_dir / f".{LAST}.new", state)
    if keep_previous and last.exists():
        os.replace(last, ckpt_dir / PREVIOUS)
    os.replace(new, last)
    return last


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` (our own file: numpy RNG state needs pickle).

    Raises :class:`Unreadable` for an empty, truncated, garbage or foreign file.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    # torch.load raises many types for a damaged file (EOFError, UnpicklingError, RuntimeError..)
    except Exception as err:
        raise Unreadable(path, f"unreadable ({first_line(err)})") from err
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise Unreadable(path, f"not a van-ablate checkpoint (no {', '.join(missing)})")
    return state


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
        shown = ", ".join(
            f"{k} ({checks.select(old, k)!r} -> {checks.select(new, k)!r})" for k in diff[:5]
        )
        more = f" and {len(diff) - 5} more" if len(diff) > 5 else ""
        raise ConfigError(
            "resume",
            str(source),
            f"checkpoint was written with another config: {shown}{more}; use the same settings, "
            "resume=never to start over, or another run directory",
        )


def resume_from(run_dir: Path, resume: str) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from and its contents, or None to start afresh.

    ``auto``: the run's newest readable checkpoint (``last.pt``, else ``previous.pt``, else
    ``best.pt``, each fallback logged as a one-line warning naming the damaged file); ``never``:
    none; a file: that checkpoint; a run directory: its newest readable one. Raises
    :class:`ConfigError` when no candidate is readable, naming the file and the choices.
    """
    if resume == "never":
        return None
    path = Path(resume)
    if resume != "auto" and path.is_file():
        try:
            return path, load(path)
        except Unreadable as err:
            allowed = f"{err.reason}; give a checkpoint file, a run directory, auto or never"
            raise ConfigError("resume", resume, allowed) from None
    if resume != "auto" and not path.is_dir():
        raise ConfigError("resume", resume, "must be auto, never, a checkpoint or a run directory")
    ckpt_dir = (run_dir if resume == "auto" else path) / "checkpoints"
    present = [ckpt_dir / name for name in RESUME_ORDER if (ckpt_dir / name).is_file()]
    if not present:
        if resume == "auto":
            return None
        raise ConfigError("resume", resume, f"{ckpt_dir} holds no {LAST}, {PREVIOUS} or {BEST}")
    damaged: list[Unreadable] = []
    for candidate in present:
        try:
            state = load(candidate)
        except Unreadable as err:
            damaged.append(err)
            continue
        for err in damaged:
            log.warning("%s is %s; resuming from %s instead", err.path, err.reason, candidate)
        return candidate, state
    first = damaged[0]
    others = f" and {len(damaged) - 1} older one(s) too" if len(damaged) > 1 else ""
    raise ConfigError(
        "resume",
        resume,
        f"checkpoint {first.path} is {first.reason}{others}; replace or remove it, or start over "
        "with resume=never (moves the old run to superseded/)",
    )


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
