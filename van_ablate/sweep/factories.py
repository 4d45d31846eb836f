"""Optuna samplers and pruners by name, as ``hydra.sweeper.sampler`` / ``pruner`` select them.

A spec is a mapping ``{name: <one of the keys below>, **constructor kwargs}``, e.g.
``{name: nsgaii, seed: 0, population_size: 8}`` or ``{name: median, n_warmup_steps: 2}``.
A sampler spec written for the official Hydra plugin (``_target_: optuna.samplers.X`` plus
arguments) carries over: its class gives the name, its other keys the arguments. Pruner specs
are also stored in the study, so a job rebuilds the same pruner when it reports an epoch
(:mod:`van_ablate.sweep.trial`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler

from van_ablate.errors import ConfigError
from van_ablate.sweep.space import SearchSpace

SAMPLERS: dict[str, Callable[..., BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "brute_force": optuna.samplers.BruteForceSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "nsgaiii": optuna.samplers.NSGAIIISampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
}
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
EXHAUSTIVE_SAMPLERS = ("grid", "brute_force")  # they end once every point was tried

PRUNERS: dict[str, Callable[..., BasePruner]] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
}


def sampler_name(spec: Mapping[str, Any]) -> str:
    """The registry name of a spec; official ``_target_`` specs map back to it when they can."""
    target = spec.get("_target_")
    if target:
        cls_name = str(target).rsplit(".", 1)[-1]
        for name, cls in SAMPLERS.items():
            if getattr(cls, "__name__", "") == cls_name:
                return name
        return cls_name
    return str(spec.get("name", "tpe"))


def make_sampler(
    spec: Mapping[str, Any], space: SearchSpace, n_objectives: int, key: str = "hydra.sweeper"
) -> BaseSampler:
    """Build the sampler; ``grid`` gets the grid of ``space``.

    >>> make_sampler({"name": "random", "seed": 0}, SearchSpace(), 1)  # doctest: +ELLIPSIS
    <optuna.samplers._random.RandomSampler object at ...>
    """
    kwargs = {k: v for k, v in dict(spec).items() if k not in ("name", "_target_", "_partial_")}
    name = sampler_name(spec)
    if name not in SAMPLERS:
        raise ConfigError(f"{key}.sampler.name", name, f"must be one of {', '.join(SAMPLERS)}")
    if n_objectives > 1 and name in SINGLE_OBJECTIVE_SAMPLERS:
        allowed = f"{name} handles one objective; for several use one of nsgaii, tpe, gp, random"
        raise ConfigError(f"{key}.sampler.name", name, allowed)
    if name == "grid":
        kwargs["search_space"] = space.grid()
    return _construct(SAMPLERS[name], kwargs, f"{key}.sampler")


def worker_seed(seed: int | None, joined: int) -> int | None:
    """The sampler seed of the sweep process that joined a study after ``joined`` others.

    The first process on a study uses ``seed`` itself, so one uninterrupted sweep is
    reproducible; every other process (run beside it, or resuming it) gets its own seed derived
    from both numbers, so it never re-asks the points another process already asked. None (an
    unseeded sampler) stays None.

    >>> worker_seed(0, 0), worker_seed(0, 1) != worker_seed(0, 2), worker_seed(None, 3)
    (0, True, None)
    """
    if seed is None or joined == 0:
        return seed
    return int(np.random.SeedSequence([int(seed), joined]).generate_state(1)[0])


def make_pruner(spec: Mapping[str, Any], key: str = "hydra.sweeper.pruner") -> BasePruner:
    """Build the pruner named by ``spec["name"]``.

    >>> type(make_pruner({"name": "median", "n_warmup_steps": 1})).__name__
    'MedianPruner'
    """
    kwargs = {k: v for k, v in dict(spec).items() if k != "name"}
    name = str(spec.get("name", "none"))
    if name == "none":
        return optuna.pruners.NopPruner()  # so pruner=none switches off a study's tuned pruner
    if name not in PRUNERS:
        raise ConfigError(f"{key}.name", name, f"must be one of {', '.join(PRUNERS)}")
    return _construct(PRUNERS[name], kwargs, key)


def _construct(factory: Callable[..., Any], kwargs: dict[str, Any], key: str) -> Any:
    params = inspect.signature(factory).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = f"not an argument of {factory.__name__}; allowed: {', '.join(params)}"
        raise ConfigError(f"{key}.{unknown[0]}", kwargs[unknown[0]], allowed)
    try:
        return factory(**kwargs)
    except ImportError as e:
        raise ConfigError(key, factory.__name__, f"needs a package: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(key, kwargs, f"{factory.__name__} rejected it: {e}") from e
