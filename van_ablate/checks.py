"""The project's one set of value checks and error helpers; each raises :class:`ConfigError`.

Every module that refuses user input does it through these, so a refusal reads the same
everywhere: one line naming the key, the bad value and what is allowed::

    from van_ablate import checks
    checks.at_least("train.batch_size", 0, 1)
    # ConfigError: train.batch_size=0: must be an integer >= 1
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from van_ablate.errors import ConfigError

__all__ = [
    "at_least",
    "check_arguments",
    "check_known_keys",
    "first_line",
    "in_range",
    "one_of",
    "select",
    "unknown_key",
]


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    """Refuse ``value`` unless it is in ``allowed``.

    >>> one_of("train.precision", "fp16", ("fp32", "bf16"))
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: train.precision='fp16': must be one of fp32, bf16
    """
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(key, value, f"must be one of {', '.join(map(str, allowed))}")


def at_least(key: str, value: Any, low: int) -> None:
    """Refuse anything but an integer >= ``low`` (a bool is not an integer here).

    >>> at_least("lka.kernel_size", 2.5, 1)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: lka.kernel_size=2.5: must be an integer >= 1
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, f"must be an integer >= {low}")


def in_range(key: str, value: Any, low: float, high: float, *, high_open: bool = False) -> None:
    """Refuse anything but a number in ``[low, high]`` (``[low, high)`` with ``high_open``).

    >>> in_range("model.drop_path_rate", 1.0, 0.0, 1.0, high_open=True)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: model.drop_path_rate=1.0: must be in [0.0, 1.0)
    """
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    inside = number and (low <= value < high if high_open else low <= value <= high)
    if not inside:
        raise ConfigError(key, value, f"must be in [{low}, {high}{')' if high_open else ']'}")


def unknown_key(key: str, value: Any, allowed: Iterable[str], word: str = "key") -> ConfigError:
    """The refusal of a key the schema lacks, listing the keys it has (raise it).

    >>> str(unknown_key("data.roots", "/x", ["name", "root"]))
    "data.roots='/x': unknown key; allowed: name, root"
    """
    return ConfigError(key, value, f"unknown {word}; allowed: {', '.join(allowed)}")


def check_known_keys(section: str, value: Mapping[str, Any], cls: type, word: str = "key") -> None:
    """Refuse the first key of mapping ``value`` that dataclass ``cls`` has no field for.

    >>> @dataclasses.dataclass
    ... class Data:
    ...     name: str = "builtin"
    >>> check_known_keys("data", {"nmae": "x"}, Data)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.nmae='x': unknown key; allowed: name
    """
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise unknown_key(f"{section}.{unknown[0]}", value[unknown[0]], fields, word)


def check_arguments(section: str, kwargs: Mapping[str, Any], fn: Callable[..., Any]) -> None:
    """Refuse the first key of ``kwargs`` that ``fn`` (a class or function) takes no argument for.

    >>> def RandomSampler(seed=None): ...
    >>> check_arguments("sampler", {"sed": 0}, RandomSampler)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: sampler.sed=0: not an argument of RandomSampler; allowed: seed
    """
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = f"not an argument of {fn.__name__}; allowed: {', '.join(params)}"
        raise ConfigError(f"{section}.{unknown[0]}", kwargs[unknown[0]], allowed)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name if it has none.

    >>> first_line(ValueError("bad value\\n  details"))
    'bad value'
    >>> first_line(KeyError())
    'KeyError'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def select(node: Any, dotted: str, default: Any = None) -> Any:
    """The value at a dotted path (``"best.val_top1"``, ``"epochs.0.loss"``) of a config or of
    plain dicts and lists, as plain Python; ``default`` where any part is missing or None.

    >>> select({"best": {"val_top1": 75.4}, "final": None}, "best.val_top1")
    75.4
    >>> select({"final": None}, "final.val_top1", default=float("nan"))
    nan
    """
    if not isinstance(node, (DictConfig, ListConfig)):
        if not isinstance(node, (Mapping, list)):
            return default
        node = OmegaConf.create(node)
    found = OmegaConf.select(node, dotted, default=default)
    if isinstance(found, (DictConfig, ListConfig)):
        return OmegaConf.to_container(found)
    return default if found is None else found
