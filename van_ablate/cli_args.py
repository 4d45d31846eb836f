"""Command-line arguments shared by ``python -m van_ablate.complexity`` and ``van_ablate.bench``.

Both commands name a model the way the training app does, with Hydra's override syntax::

    python -m van_ablate.complexity model=van_b2 lka.kernel_size=7 lka.gate=sigmoid

Keys: ``model=NAME``, ``model.FIELD=VALUE`` (:class:`~van_ablate.model.spec.ModelConfig`),
``lka.FIELD=VALUE`` (:class:`~van_ablate.model.lka.LKASpec`, the switches of Sec. 3.2 and Table 3),
``data.img_size=N`` and ``data.num_classes=N``. The older ``--model NAME``, ``--img-size N``
and ``--lka.FIELD VALUE`` options say the same. Bad input is reported on one line with exit
status 2. This module holds that parser and turns its arguments into a
:class:`~van_ablate.model.spec.ModelSpec`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from van_ablate import checks
from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.model.lka import LKASpec
from van_ablate.model.spec import ModelConfig, ModelSpec
from van_ablate.model.van import ARCHS

__all__ = ["OneLineParser", "add_model_arguments", "model_from_args", "overrides_given"]

_LKA_KEYS = tuple(f"lka.{f.name}" for f in dataclasses.fields(LKASpec))
_MODEL_KEYS = tuple(f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.name != "name")
_DATA_KEYS = ("data.img_size", "data.num_classes")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input on one line (no usage block) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def add_model_arguments(
    parser: argparse.ArgumentParser, model: str | None = None, *, arch: bool = True
) -> None:
    """``KEY=VALUE`` overrides plus their aliases ``--model``, ``--img-size``, ``--lka.FIELD``.

    ``arch=False`` leaves out ``model.FIELD`` and ``data.num_classes`` for a command that
    builds the registered architecture only.
    """
    keys = ("model", *(_MODEL_KEYS if arch else ()), *_LKA_KEYS, *_DATA_KEYS[: 2 if arch else 1])
    parser.set_defaults(override_keys=keys, default_model=model)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help=f"the training app's overrides; keys: {', '.join(keys)}",
    )
    parser.add_argument("--model", help=f"same as model=NAME; one of {', '.join(ARCHS)}")
    parser.add_argument("--img-size", type=int, help="same as data.img_size=N (default 224)")
    for field in dataclasses.fields(LKASpec):
        parser.add_argument(
            f"--lka.{field.name}",
            dest=f"lka_{field.name}",
            metavar="VALUE",
            help=f"same as lka.{field.name}=VALUE (default {field.default})",
        )


def overrides_given(args: argparse.Namespace) -> dict[str, Any]:
    """Every key the command line set, as ``{"lka.kernel_size": 7, "model": "van_b0"}``.

    Values are typed as Hydra types them (``7`` an int, ``true`` a bool, ``[1,2]`` a list); an
    option alias and an override of the same key: the later one on the line is not known to
    argparse, so the ``KEY=VALUE`` form wins.
    """
    lines = []
    if args.model is not None:
        lines.append(f"model={args.model}")
    if args.img_size is not None:
        lines.append(f"data.img_size={args.img_size}")
    for key in _LKA_KEYS:
        text = getattr(args, key.replace(".", "_"))
        if text is not None:
            lines.append(f"{key}={text}")
    lines += args.overrides
    given: dict[str, Any] = {}
    for line in lines:
        try:
            (override,) = OverridesParser.create().parse_overrides([line])
        except OverrideParseException as e:
            reason = f"not a valid override ({checks.first_line(e)})"
            raise ConfigError(line.partition("=")[0], line, reason) from e
        key, value = override.key_or_group, override.value()
        if key not in args.override_keys:
            raise checks.unknown_key(key, value, args.override_keys)
        if override.is_sweep_override():
            raise ConfigError(key, line.partition("=")[2], "must be one value (no sweep here)")
        given[key] = value
    return given


def model_from_args(args: argparse.Namespace, default_model: str = "van_b0") -> ModelSpec:
    """The :class:`ModelSpec` the arguments describe; unset keys keep their defaults."""
    given = overrides_given(args)
    lka = {key.removeprefix("lka."): v for key, v in given.items() if key.startswith("lka.")}
    model = {key.removeprefix("model."): v for key, v in given.items() if key.startswith("model.")}
    data = {key.removeprefix("data."): v for key, v in given.items() if key.startswith("data.")}
    return ModelSpec(
        name=given.get("model", args.default_model or default_model),
        lka=LKASpec(**lka),
        **model,
        **data,
    )
