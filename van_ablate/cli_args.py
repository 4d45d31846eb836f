"""Command-line arguments shared by ``python -m van_ablate.complexity`` and ``van_ablate.bench``.

Both commands name a model and an LKA the same way: ``--model``, ``--img-size`` and one
``--lka.FIELD VALUE`` per :class:`~van_ablate.lka.LKASpec` field (the switches of Sec. 3.2 and
Table 3), and both report bad input on one line with exit status 2. This module holds that
parser, the arguments and the parsing of ``--lka.*`` values into an ``LKASpec``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, NoReturn

from van_ablate.errors import EXIT_CONFIG, ConfigError
from van_ablate.lka import LKASpec
from van_ablate.van import ARCHS

__all__ = ["OneLineParser", "add_model_arguments", "lka_from_args"]


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input on one line (no usage block) and exits with 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _lka_field_parser(field: dataclasses.Field) -> Callable[[str], Any]:
    default = field.default

    def parse(text: str) -> Any:
        key = f"lka.{field.name}"
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ConfigError(key, text, "must be true or false")
            return text.lower() == "true"
        if isinstance(default, int) or (field.name == "dilation" and text != "auto"):
            try:
                return int(text)
            except ValueError:
                allowed = "must be 'auto' or an integer >= 1" if field.name == "dilation" else ""
                raise ConfigError(key, text, allowed or "must be an integer >= 1") from None
        return text

    return parse


def add_model_arguments(parser: argparse.ArgumentParser, model: str | None = None) -> None:
    """``--model``, ``--img-size`` and one ``--lka.FIELD VALUE`` per :class:`LKASpec` field."""
    parser.add_argument("--model", default=model, help=f"one of {', '.join(ARCHS)}")
    parser.add_argument("--img-size", type=int, default=224, help="input side (default 224)")
    for field in dataclasses.fields(LKASpec):
        parser.add_argument(
            f"--lka.{field.name}",
            dest=f"lka_{field.name}",
            metavar="VALUE",
            help=f"LKASpec.{field.name} (default {field.default})",
        )


def lka_from_args(args: argparse.Namespace) -> LKASpec:
    """The spec the ``--lka.*`` arguments describe (unset fields keep their defaults)."""
    given = {}
    for field in dataclasses.fields(LKASpec):
        text = getattr(args, f"lka_{field.name}")
        if text is not None:
            given[field.name] = _lka_field_parser(field)(text)
    return LKASpec(**given)
