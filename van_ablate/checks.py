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
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from van_ablate.errors import ConfigError

__all__ = [
    "above",
    "accepted",
    "at_least",
    "available_memory",
    "check_arguments",
    "check_known_keys",
    "finite_word",
    "first_line",
    "fits_memory",
    "folder",
    "in_range",
    "interval",
    "meminfo_available",
    "nbytes",
    "numbers",
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


def at_least(key: str, value: Any, low: int, *, why: str = "") -> None:
    """Refuse anything but an integer >= ``low`` (a bool is not an integer here); ``why``, if
    given, is said in brackets.

    >>> at_least("lka.kernel_size", 2.5, 1)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: lka.kernel_size=2.5: must be an integer >= 1
    >>> at_least("data.num_classes", 2, 3, why="the data has 3")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.num_classes=2: must be an integer >= 3 (the data has 3)
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, f"must be an integer >= {low}{_why(why)}")


def in_range(
    key: str, value: Any, low: float, high: float = math.inf, *, high_open: bool = False
) -> None:
    """Refuse anything but a finite number in ``[low, high]`` (``[low, high)`` with
    ``high_open``; no upper bound when ``high`` is inf). nan and inf are always refused.

    >>> in_range("model.drop_path_rate", 1.0, 0.0, 1.0, high_open=True)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: model.drop_path_rate=1.0: must be in [0.0, 1.0)
    >>> in_range("train.weight_decay", float("inf"), 0.0)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: train.weight_decay=inf: must be a finite number >= 0.0
    """
    inside = _number(value) and (low <= value < high if high_open else low <= value <= high)
    if not inside:
        if math.isinf(high):
            raise ConfigError(key, value, f"must be a finite number >= {low}")
        raise ConfigError(key, value, f"must be in [{low}, {high}{')' if high_open else ']'}")


def above(key: str, value: Any, low: float, *, inclusive: bool = False, why: str = "") -> None:
    """Refuse anything but a finite number > ``low`` (>= ``low`` with ``inclusive``); ``why``
    is said in brackets.

    >>> above("data.crop_pct", 0, 0, why="eval resize img_size / it")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.crop_pct=0: must be a number > 0 (eval resize img_size / it)
    >>> above("train.lr", float("inf"), 0)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: train.lr=inf: must be a finite number > 0
    >>> above("data.color_jitter", 0.0, 0, inclusive=True)
    """
    ok = _number(value) and (value >= low if inclusive else value > low)
    if not ok:
        bound = f"{'>=' if inclusive else '>'} {low}"
        raise ConfigError(key, value, f"must be a {finite_word(value)}number {bound}{_why(why)}")


def numbers(
    key: str, value: Any, count: int, *, above: float | None = None, why: str = ""
) -> list[float]:
    """Refuse anything but a list of ``count`` finite numbers (each > ``above`` if given); the
    numbers.

    >>> numbers("data.std", [0.0], 3, above=0, why="one per channel")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.std=[0.0]: must be a list of 3 numbers > 0 (one per channel)
    >>> numbers("data.mean", [0.5, float("nan"), 0.5], 3)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.mean=[0.5, nan, 0.5]: must be a list of 3 finite numbers
    >>> numbers("data.mean", (0.5, 0.5, 0.5), 3)
    [0.5, 0.5, 0.5]
    """
    values = _list(value)
    ok = values is not None and len(values) == count and all(map(_number, values))
    if not ok or (above is not None and min(values) <= above):
        bound = "" if above is None else f" > {above}"
        shown = value if values is None else values
        finite = finite_word(*(values or ()))
        raise ConfigError(
            key, shown, f"must be a list of {count} {finite}numbers{bound}{_why(why)}"
        )
    return [float(v) for v in values]


def interval(key: str, value: Any, low: float, high: float | None = None) -> tuple[float, float]:
    """Refuse anything but finite ``[min, max]`` with ``low < min <= max`` (``<= high`` if given).

    >>> interval("data.scale", [0.5, 2], 0, 1)
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.scale=[0.5, 2]: must be [min, max] with 0 < min <= max <= 1
    >>> interval("data.ratio", [1, float("inf")], 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.ratio=[1, inf]: must be finite [min, max] with 0 < min ...
    >>> interval("data.ratio", [0.75, 1.25], 0)
    (0.75, 1.25)
    """
    values = _list(value)
    ok = values is not None and len(values) == 2 and all(map(_number, values))
    ok = ok and low < values[0] <= values[1] and (high is None or values[1] <= high)
    if not ok:
        bound = "" if high is None else f" <= {high}"
        shown = value if values is None else values
        finite = finite_word(*(values or ()))
        raise ConfigError(key, shown, f"must be {finite}[min, max] with {low} < min <= max{bound}")
    return float(values[0]), float(values[1])


def accepted(key: str, value: Any, parse: Callable[[Any], object], allowed: str) -> None:
    """Refuse ``value`` when ``parse(value)`` raises: for values only a library can judge.

    >>> accepted("train.sched", "cosin", {"cosine": 1, "step": 2}.__getitem__,
    ...          "must be one of timm's scheduler names")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: train.sched='cosin': must be one of timm's scheduler names
    """
    try:
        parse(value)
    except Exception:  # libraries refuse with many types (AssertionError, KeyError, ValueError)
        raise ConfigError(key, value, allowed) from None


def folder(key: str, value: str | os.PathLike | None, *, why: str = "") -> Path:
    """The path (``~`` expanded) of an existing folder with something in it; refuse anything
    else (``why`` says, in brackets, what needs the folder when none is given).

    >>> folder("data.root", None, why="data.name=imagenet reads it")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.root=None: must be a folder (data.name=imagenet reads it)
    >>> folder("data.root", "/nonexistent")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.root='/nonexistent': no such folder
    """
    if not value:
        raise ConfigError(key, value, f"must be a folder{_why(why)}")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(key, value, "no such folder")
    if not any(path.iterdir()):
        raise ConfigError(key, value, "the folder is empty")
    return path


def fits_memory(
    key: str, value: Any, needed: int, available: int | None, *, what: str, where: str
) -> None:
    """Refuse when ``needed`` bytes exceed ``available`` (None: not known, so not refused);
    ``what`` says what needs them, ``where`` whose memory it is ("... the 64.0 GiB available
    on cpu").

    >>> fits_memory("data.img_size", 4096, 3 * 2**40, 64 * 2**30, what="a step", where="cpu")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: data.img_size=4096: a step needs about 3.0 TiB, more than ...
    >>> fits_memory("data.img_size", 64, 2**20, None, what="a step", where="cpu")
    """
    if available is not None and needed > available:
        raise ConfigError(
            key,
            value,
            f"{what} needs about {nbytes(needed)}, more than the {nbytes(available)} "
            f"available on {where}",
        )


def available_memory(device: Any) -> int | None:
    """Bytes free for new tensors on ``device`` (a ``torch.device`` or its name): the driver's
    free memory on CUDA, ``MemAvailable`` of ``/proc/meminfo`` on CPU; None where not known."""
    import torch  # only the job's pre-flight asks; the config checks stay light

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        text = Path("/proc/meminfo").read_text() if device.type == "cpu" else ""
    except OSError:
        return None
    return meminfo_available(text)


def meminfo_available(text: str) -> int | None:
    """``MemAvailable`` of a ``/proc/meminfo`` text in bytes; None when the line is missing.

    >>> meminfo_available("MemTotal:  8000 kB\\nMemAvailable:  2048 kB\\n")
    2097152
    >>> meminfo_available("")
    """
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            return int(rest.split()[0]) * 1024  # the kernel writes kB and means KiB
    return None


def nbytes(n: float) -> str:
    """A byte count in binary units, as a refusal says it.

    >>> nbytes(512), nbytes(3 * 2**40), nbytes(1.5 * 2**30)
    ('512 B', '3.0 TiB', '1.5 GiB')
    """
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            break
    return f"{n:.1f} {unit}"


def _number(value: Any) -> bool:
    """A finite int or float: nan fails every comparison and inf passes any lower bound, so
    neither can be told apart from a bad value by the range checks alone."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def finite_word(*values: Any) -> str:
    """'finite ' when one of ``values`` is nan or infinite, so a refusal says why ("must be a
    finite number > 0"); '' otherwise.

    >>> finite_word(0.5, float("nan")), finite_word(-1)
    ('finite ', '')
    """
    return "finite " if any(isinstance(v, float) and not math.isfinite(v) for v in values) else ""


def _list(value: Any) -> list[Any] | None:
    """A list of the items of a sequence (ListConfig too); None for anything else, a str too."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None


def _why(why: str) -> str:
    return f" ({why})" if why else ""


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
