"""Optuna samplers and pruners from the ``_target_`` nodes ``hydra/sweeper/sampler`` and
``hydra/sweeper/pruner`` select (:data:`~hydra_plugins.van_ablate_sweeper.config.SAMPLERS`).

A node names the class and the arguments set, e.g. ``{_target_: optuna.samplers.NSGAIISampler,
seed: 0, population_size: 8}``; ``hydra.utils.instantiate`` builds it, so a sampler node written
for the official Hydra plugin carries over. The pruner node is also kept in the study, so a job
rebuilds the same pruner when it reports an epoch (:mod:`van_ablate.sweep.trial`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from optuna.pruners import BasePruner

from hydra_plugins.van_ablate_sweeper.config import PRUNERS, REMOVED, SAMPLERS
from van_ablate import checks
from van_ablate.errors import ConfigError

ONE_OBJECTIVE = (optuna.samplers.CmaEsSampler,)
EXHAUSTIVE = (optuna.samplers.GridSampler, optuna.samplers.BruteForceSampler)  # end when done


def sampler_class(spec: Mapping[str, Any], key: str = "hydra.sweeper.sampler") -> type:
    """The Optuna class a sampler node names; only the group options' classes are offered."""
    return _class(spec, key, SAMPLERS)


def make_sampler(spec: Mapping[str, Any], key: str = "hydra.sweeper.sampler", **given: Any):
    """Build the sampler; ``given`` arguments (a grid's ``search_space``, a seed) win.

    >>> make_sampler({"_target_": "optuna.samplers.RandomSampler", "seed": 0})  # doctest: +ELLIPSIS
    <optuna.samplers._random.RandomSampler object at ...>
    """
    return _build(spec, key, SAMPLERS, given)


def make_pruner(spec: Mapping[str, Any] | None, key: str = "hydra.sweeper.pruner") -> BasePruner:
    """Build the pruner; ``None`` is none, and ``{name: median, ...}`` (as studies of earlier
    versions keep it) names a group option.

    >>> type(make_pruner({"name": "median", "n_warmup_steps": 1})).__name__
    'MedianPruner'
    """
    spec = dict(spec or PRUNERS["none"])
    if "name" in spec:
        spec = {**PRUNERS.get(spec.pop("name"), {"_target_": None}), **spec}
    if spec.get("_target_") == PRUNERS["none"]["_target_"]:
        return optuna.pruners.NopPruner()  # so pruner=none switches off a study's tuned pruner
    return _build(spec, key, PRUNERS, {})


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


def startup_trials(spec: Mapping[str, Any] | None = None) -> int:
    """Trials a sampler draws before it follows a trend: its ``n_startup_trials`` or
    ``population_size``, as set in ``spec`` or else Optuna's default; TPE's (the default
    sampler's) for a sampler without either.

    >>> startup_trials({"_target_": "optuna.samplers.NSGAIISampler", "population_size": 8})
    8
    """
    spec = dict(spec or {})
    target = spec.get("_target_") or SAMPLERS.get(spec.get("name"), {}).get("_target_")
    if target in [node["_target_"] for node in SAMPLERS.values()]:
        count = _startup(get_class(target), spec)
        if count is not None:
            return count
    return _startup(optuna.samplers.TPESampler, {}) or 0


def _startup(cls: type, spec: Mapping[str, Any]) -> int | None:
    merged = {k: p.default for k, p in inspect.signature(cls).parameters.items()} | dict(spec)
    counts = [merged.get(k) for k in ("n_startup_trials", "population_size")]
    return next((n for n in counts if isinstance(n, int)), None)


def _class(spec: Mapping[str, Any], key: str, table: Mapping[str, Mapping[str, Any]]) -> type:
    target = spec.get("_target_")
    if spec.get("removed") in REMOVED:
        raise ConfigError("hydra/sweeper/sampler", spec["removed"], REMOVED[spec["removed"]])
    checks.one_of(f"{key}._target_", target, [node["_target_"] for node in table.values()])
    return get_class(target)


def _build(spec: Mapping[str, Any], key: str, table: Mapping, given: dict[str, Any]) -> Any:
    cls = _class(spec, key, table)
    kwargs = {k: v for k, v in spec.items() if not k.startswith("_")} | given
    checks.check_arguments(key, kwargs, cls)
    try:
        return instantiate({"_target_": spec["_target_"], "_convert_": "all"}, **kwargs)
    except InstantiationException as e:  # the class refused a value, or needs a package
        cause = e.__cause__ or e
        if isinstance(cause, ConfigError):  # ours (the adaptive sampler) names its key itself
            raise cause from None
        raise ConfigError(key, kwargs, f"{cls.__name__}: {checks.first_line(cause)}") from e
