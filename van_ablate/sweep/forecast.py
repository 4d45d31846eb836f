"""What a study will cost, said before its first trial: trials x epochs x images / images per s.

Each row of the study (one composed job config per distinct model) is built and timed for a few
forward+backward and forward steps on this device, at the row's batch and image size and with
this process's threads (:func:`van_ablate.bench.benchmark`); the data sizes come from the row's
own loaders. A trial costs ``epochs x (train images / train img/s + val images / forward img/s)``
and a study the sum over its trials: expected (the seeds a grid gives every row, or ``min_seeds``
for an adaptive study) and worst (``max_seeds`` for every row). The figures are device hours of
one worker; workers running side by side divide the wall time, not the device time::

    cost = forecast({"baseline": cfg_a, "dense_conv": cfg_b}, expected={"baseline": 3, ...})
    print("\\n".join(cost.lines()))

The timed steps leave out the optimizer step and data loading, so a real trial is somewhat
slower; the README compares a forecast with the measured wall time of the same study.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Mapping
from typing import Any

import torch

from van_ablate.bench import benchmark
from van_ablate.config import Config
from van_ablate.data.loaders import build_loaders
from van_ablate.model.spec import ModelSpec

__all__ = ["Forecast", "RowCost", "forecast", "study_rows", "time_row"]

TIMED_STEPS = 3  # a few steps: the forecast must cost seconds, not a trial
MAX_ROWS = 12  # a larger space is forecast from this many of its points, drawn at random
SEED_PARAM = "seed"


@dataclasses.dataclass(frozen=True)
class RowCost:
    """One row: its measured images/s and what one of its trials costs, in seconds."""

    row: str
    train_img_s: float
    forward_img_s: float
    num_train: int
    num_val: int
    epochs: int

    @property
    def trial_s(self) -> float:
        per_epoch = self.num_train / self.train_img_s + self.num_val / self.forward_img_s
        return self.epochs * per_epoch


@dataclasses.dataclass(frozen=True)
class Forecast:
    """A study's rows with the trials each is expected to get (and at worst), and the total."""

    rows: tuple[RowCost, ...]
    expected: Mapping[str, float]
    worst: Mapping[str, float]
    threads: int

    @property
    def expected_h(self) -> float:
        return sum(r.trial_s * self.expected[r.row] for r in self.rows) / 3600

    @property
    def worst_h(self) -> float:
        return sum(r.trial_s * self.worst[r.row] for r in self.rows) / 3600

    def lines(self) -> list[str]:
        """What the sweeper prints: one line per row, then the totals."""
        out = [
            f"Forecast ({self.threads} thread(s) on this device, a few timed steps per row; "
            "device hours of one worker):"
        ]
        for r in self.rows:
            n, worst = self.expected[r.row], self.worst[r.row]
            trials = f"{n:.3g}" if n == worst else f"{n:.3g} to {worst:.3g}"
            out.append(
                f"  {r.row}: {r.train_img_s:.0f} train img/s, {r.forward_img_s:.0f} eval img/s, "
                f"{r.trial_s / 60:.1f} min a trial x {trials} trials"
            )
        total = f"  expected {self.expected_h:.2f} h"
        if self.worst_h > self.expected_h:
            total += f", worst case {self.worst_h:.2f} h"
        out.append(f"{total} ({sum(self.expected.values()):.0f} trials)")
        return out


def study_rows(
    grid: Mapping[str, list[Any]] | None,
    n_trials: int,
    seeds: tuple[int, int] | None = None,
    sample: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, float], dict[str, float]]:
    """The rows to time (label -> parameters), and the trials each is expected to get and at
    worst. ``grid``: every value of every parameter (None for a continuous space, which is
    forecast from ``sample``, points drawn from it); the seed axis is not a row. ``seeds``:
    (min_seeds, max_seeds) of an adaptive study.

    >>> rows, n, worst = study_rows({"+ablation": ["a", "b"], "seed": [0, 1, 2]}, 1000)
    >>> list(rows), n
    (['+ablation=a', '+ablation=b'], {'+ablation=a': 3.0, '+ablation=b': 3.0})
    """
    if grid is None:
        points = sample or [{}]
    else:
        axes = {k: v for k, v in grid.items() if k != SEED_PARAM}
        points = [
            dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())
        ]
    total = len(points)
    if total > MAX_ROWS:
        points = random.Random(0).sample(points, MAX_ROWS)
    rows = {" ".join(f"{k}={v}" for k, v in p.items()) or "(fixed)": p for p in points}
    if seeds is not None:  # adaptive: one round of min_seeds, at worst max_seeds within n_trials
        expected = dict.fromkeys(rows, float(seeds[0]))
        worst = dict.fromkeys(rows, min(float(seeds[1]), n_trials / len(rows)))
    else:  # every point of a grid with each seed, or as many trials as n_trials allows
        trials = n_trials if grid is None else min(n_trials, total * len(grid.get(SEED_PARAM, [0])))
        expected = worst = dict.fromkeys(rows, trials / len(rows))
    return rows, expected, worst


def time_row(row: str, cfg: Config, steps: int = TIMED_STEPS) -> RowCost:
    """Build ``cfg``'s model and loaders and time a few steps of it on this device."""
    _, _, info = build_loaders(
        cfg.data,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.train.eval_batch_size,
        seed=cfg.seed,
    )
    spec = ModelSpec.from_config(
        cfg.model, cfg.lka, num_classes=info.num_classes, img_size=cfg.data.img_size
    )
    device = "cuda" if cfg.train.device == "auto" and torch.cuda.is_available() else "cpu"
    if cfg.train.device not in ("auto", "cpu"):
        device = cfg.train.device
    speed = benchmark(
        {row: spec.build()},
        batch_size=cfg.train.batch_size,
        img_size=cfg.data.img_size,
        device=device,
        channels_last=cfg.train.channels_last,
        precision=cfg.train.precision,
        warmup=1,
        iters=steps,
        repeats=1,
    )[row]
    return RowCost(
        row=row,
        train_img_s=speed["train"]["median"],
        forward_img_s=speed["forward"]["median"],
        num_train=info.num_train,
        num_val=info.num_val,
        epochs=cfg.train.epochs,
    )


def forecast(
    rows: Mapping[str, Config],
    expected: Mapping[str, float],
    worst: Mapping[str, float] | None = None,
) -> Forecast:
    """Time every row and add up its trials: ``expected`` (and ``worst``) trials per row."""
    costs = tuple(time_row(name, cfg) for name, cfg in rows.items())
    return Forecast(costs, dict(expected), dict(worst or expected), torch.get_num_threads())
