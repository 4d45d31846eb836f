"""Conditional search spaces for ``hydra.sweeper.custom_search_space`` (Sec. 3.2, Eq. 3).

``lka_dilation`` suggests the dilation d only where it changes the model: with the DW-D-Conv in
place and no dense K x K conv. It searches d around the Eq. 3 choice for the trial's K (one of
d-1, d, d+1), so every K gets sensible dilations::

    hydra.sweeper.custom_search_space: van_ablate.sweep.spaces.lka_dilation
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from optuna.trial import Trial

from van_ablate.model.lka import auto_dilation


def lka_dilation(cfg: Any, trial: Trial) -> dict[str, Any]:
    """Suggest ``lka.dilation_step`` in {-1, 0, 1} and return the override ``lka.dilation``."""
    lka = {**_lka(cfg), **{k[4:]: v for k, v in trial.params.items() if k.startswith("lka.")}}
    if not _true(lka.get("dwd_conv", True)) or _true(lka.get("dense", False)):
        return {}  # the dilation changes nothing without a DW-D-Conv, or with a dense conv
    k = int(lka.get("kernel_size", 21))
    step = trial.suggest_int("lka.dilation_step", -1, 1)
    return {"lka.dilation": min(k, max(1, auto_dilation(k) + step))}


def _lka(cfg: Any) -> dict[str, Any]:
    node = OmegaConf.select(cfg, "lka") if cfg is not None else None
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _true(value: Any) -> bool:
    return str(value).lower() in ("true", "1")
