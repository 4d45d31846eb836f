"""A sweep's search space: Hydra override syntax in, Optuna 5 distributions out.

``hydra.sweeper.params`` and sweep overrides on the command line use the official Hydra Optuna
sweeper's syntax, parsed by Hydra's own override parser::

    lka.kernel_size: choice(7, 14, 21, 28)      -> CategoricalDistribution
    model.depth: range(1, 3)                    -> IntDistribution(1, 3)   (stop included)
    train.drop: range(0.0, 0.5, step=0.1)       -> FloatDistribution(0.0, 0.5, step=0.1)
    train.lr: tag(log, interval(1e-4, 1e-2))    -> FloatDistribution(log=True)
    train.warmup: int(interval(0, 5))           -> IntDistribution(0, 5)
    seed: 0                                     -> fixed value, passed to every job

``range`` means what the official plugin makes of it: an Optuna distribution from ``start`` to
``stop``, both included, except that a grid walks ``start, start + step, ...`` short of ``stop``
(Python's ``range``, the official plugin's grid).

This is how the sweeper searches the LKA design space of Sec. 3.1-3.2 (K, d, branches) and the
Table 2 sizes (depths, widths, MLP ratios).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import Trial

from van_ablate.checks import first_line
from van_ablate.errors import ConfigError

SYNTAX = (
    "must be a fixed value or one of choice(a, b, ...), range(start, stop[, step]), "
    "interval(low, high), int(interval(low, high)), tag(log, interval(low, high))"
)
DISCRETE = "a grid or brute-force search needs choice(...), range(...) or int(interval(...))"
# A custom search space: ``fn(cfg, trial)`` suggests more parameters; it may return a mapping of
# extra overrides built from them (then the parameters it suggested are not passed as overrides).
CustomSpace = Callable[[Any, Trial], "Mapping[str, Any] | None"]


@dataclass
class SearchSpace:
    """Distributions Optuna samples, and fixed overrides passed to every job unchanged."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str | None] = field(default_factory=dict)  # None: a deletion, `~key`

    def to_json(self) -> str:
        """A canonical string that changes whenever the space does (kept in the study)."""
        spec = {
            "distributions": {k: distribution_to_json(d) for k, d in self.distributions.items()},
            "fixed": self.fixed,
        }
        return json.dumps(spec, sort_keys=True)

    def grid(self, key: str = "hydra.sweeper.params", stop_included: bool = False) -> dict:
        """Every value of every parameter: as ``GridSampler`` walks them, stepped ones short of
        ``high`` (as the official plugin's grid and Python's ``range``), though random and TPE
        sampling may draw ``high``; or, ``stop_included``, as ``BruteForceSampler`` does.
        Continuous parameters are an error.

        >>> SearchSpace({"x": IntDistribution(1, 3), "y": FloatDistribution(0, 1, step=0.5)}).grid()
        {'x': [1, 2], 'y': [0.0, 0.5]}
        """
        grid = {}
        for name, dist in self.distributions.items():
            step = getattr(dist, "step", None)
            if isinstance(dist, CategoricalDistribution):
                grid[name] = list(dist.choices)
            elif step is None:
                raise ConfigError(f"{key}.{name}", dist, DISCRETE)
            else:
                width = dist.high - dist.low
                n = round(width / step) + 1 if stop_included else int(width // step)
                grid[name] = [dist.low + i * step for i in range(n)]
        return grid


def parse_space(params: Mapping[str, Any] | None, arguments: Iterable[str] = ()) -> SearchSpace:
    """Build the space from ``hydra.sweeper.params`` plus command-line sweep overrides.

    >>> space = parse_space({"lka.kernel_size": "choice(7, 21)", "seed": 0}, ["train.lr=0.1"])
    >>> space.distributions["lka.kernel_size"].choices, space.fixed
    ((7, 21), {'seed': '0', 'train.lr': '0.1'})
    >>> from optuna.trial import FixedTrial
    >>> job_overrides(FixedTrial({}), parse_space({}, ["~train.clip_grad"]))
    ['~train.clip_grad']
    """
    parser = OverridesParser.create()
    space = SearchSpace()
    lines = [(f"hydra.sweeper.params.{k}", f"{k}={v}") for k, v in (params or {}).items()]
    lines += [(arg.split("=", 1)[0], arg) for arg in arguments]
    for key, line in lines:
        try:
            override = parser.parse_override(line)
        except Exception as e:  # Hydra raises several exception types for bad syntax
            raise ConfigError(key, line.split("=", 1)[-1], f"{SYNTAX} ({first_line(e)})") from e
        name = override.get_key_element()
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = to_distribution(override, key)
        elif override.is_delete() and override.value() is None:  # `~key`: passed on as typed
            space.fixed[name] = None
        else:
            space.fixed[name] = override.get_value_element_as_str()
    return space


def to_distribution(override: Override, key: str) -> BaseDistribution:
    """One sweep override as an Optuna distribution, as the official plugin builds it.

    >>> from hydra.core.override_parser.overrides_parser import OverridesParser
    >>> to_distribution(OverridesParser.create().parse_override("x=range(1, 3)"), "x")
    IntDistribution(high=3, log=False, low=1, step=1)
    """
    value = override.value()
    try:
        if isinstance(value, IntervalSweep):
            unknown = set(value.tags) - {"log"}
            if unknown:
                raise ValueError(f"unknown tag {sorted(unknown)[0]!r}; the only tag is 'log'")
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log)
            return FloatDistribution(float(value.start), float(value.end), log=log)
        if isinstance(value, RangeSweep) and not value.shuffle:
            ends = (value.start, value.stop, value.step)
            if any(isinstance(x, float) for x in ends):
                step = float(value.step) if value.step else None
                return FloatDistribution(float(value.start), float(value.stop), step=step)
            return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
        if isinstance(value, (ChoiceSweep, RangeSweep)):
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            return CategoricalDistribution(choices)
    except ValueError as e:
        raise ConfigError(key, _source(override), f"{SYNTAX} ({e})") from e
    raise ConfigError(key, _source(override), SYNTAX)


def suggest(trial: Trial, name: str, dist: BaseDistribution) -> Any:
    """``trial.suggest_*`` for a distribution (the public counterpart of ``Trial._suggest``)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def job_overrides(
    trial: Trial,
    space: SearchSpace,
    custom: CustomSpace | None = None,
    cfg: Any = None,
) -> list[str]:
    """Suggest every parameter of ``trial`` and return the job's overrides, fixed ones last."""
    for name, dist in space.distributions.items():
        suggest(trial, name, dist)
    values: dict[str, Any] = dict(trial.params)
    if custom is not None:
        extra = custom(cfg, trial)
        # Returned overrides replace the parameters it suggested; otherwise those are overrides.
        values = {**values, **extra} if extra is not None else dict(trial.params)
    overrides = [f"{name}={format_value(value)}" for name, value in values.items()]
    fixed = [(name, value) for name, value in space.fixed.items() if name not in values]
    overrides += [name if value is None else f"{name}={value}" for name, value in fixed]
    return overrides


def format_value(value: Any) -> str:
    """A Python value as Hydra override text (lists stay lists, odd strings get quoted); Hydra
    parses override text but has no public writer of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    text = str(value)
    if text and all(c.isalnum() or c in "_-./[],:@" for c in text):
        return text
    return quote(text)


def quote(text: str) -> str:
    """Single-quote ``text`` for a Hydra override value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _source(override: Override) -> str:
    return override.input_line.split("=", 1)[-1] if override.input_line else str(override.value())
