"""The ablations, ``conf/ablation/<name>.yaml``: the one place each says what it changes.

An ablation sets ``lka.*`` switches and ``model.layer_scale`` on top of a job (``+ablation=k7``,
or a list). Hydra composes them; this module reads the same files for what has to know an
ablation without composing a job: which ablations conflict, and the LKA and LayerScale of each
paper row (:mod:`van_ablate.paper` maps the rows to ablation names)::

    ablation_settings("k7")          # {"lka.kernel_size": 7, "lka.dilation": 2}
    ablation_model("no_layer_scale") # (LKASpec(), False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from omegaconf import OmegaConf

from van_ablate import checks
from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKASpec

__all__ = [
    "CONF_PACKAGE",
    "ablation_model",
    "ablation_names",
    "ablation_settings",
    "check_ablations",
]

# conf/ is installed as this package (pyproject.toml), in an editable install and a wheel alike;
# the ablation group lives in it like every other group.
CONF_PACKAGE = "van_ablate.conf"


def ablation_names() -> list[str]:
    """Every ablation, sorted."""
    folder = resources.files(CONF_PACKAGE) / "ablation"
    return sorted(
        f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml")
    )


def ablation_settings(name: str) -> dict[str, Any]:
    """The dotted keys an ablation sets, e.g. ``{"lka.gate": "sigmoid"}``."""
    checks.one_of("ablation", name, ablation_names())
    text = (resources.files(CONF_PACKAGE) / "ablation" / f"{name}.yaml").read_text()
    return _flatten(OmegaConf.to_container(OmegaConf.create(text)))


def ablation_model(name: str) -> tuple[LKASpec, bool]:
    """The LKA and LayerScale switch an ablation gives a job that sets nothing else."""
    settings = ablation_settings(name)
    lka = {k.removeprefix("lka."): v for k, v in settings.items() if k.startswith("lka.")}
    return LKASpec(**lka), settings.get("model.layer_scale", True)


def check_ablations(ablations: Sequence[str]) -> None:
    """Refuse two ablations that set one key to different values (Hydra would merge silently)."""
    seen: dict[str, tuple[str, Any]] = {}
    for name in ablations:
        for key, value in ablation_settings(name).items():
            if key in seen and seen[key][1] != value:
                first, first_value = seen[key]
                raise ConfigError(
                    "ablation",
                    list(ablations),
                    f"ablations {first} ({key}={first_value}) and {name} ({key}={value}) "
                    "conflict; choose one",
                )
            seen.setdefault(key, (name, value))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
