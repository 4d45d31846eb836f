"""Run directories: a deterministic name per command, and the trained model of a finished run.

``python -m van_ablate +ablation=no_sigmoid seed=1`` always writes to
``runs/van_proxy/no_sigmoid-s1``, so typing it again continues that run. Any other override adds
a short hash (``no_sigmoid-s1-3fa2c1d0``). A run directory holds ``config.yaml``, ``train.log``,
``results.json``, ``checkpoints/{last,previous,best}.pt`` and ``wandb/``::

    model = load_run_model("runs/van_proxy/no_sigmoid-s1", which="best")
    backbone = load_run_model("runs/van_proxy/no_sigmoid-s1", features_only=True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from van_ablate.model.spec import ModelSpec
from van_ablate.train import checkpoint

# Overrides that do not name a different experiment: they are in the name itself (ablations,
# seed; the model group is the parent folder) or change only logging, resuming and scoring.
_NOT_HASHED = ("ablation", "seed", "model", "resume", "objective")
_NOT_HASHED_GROUPS = ("logger", "trial")


def ablations_from_overrides(overrides: Sequence[str]) -> list[str]:
    """The ablations an override list selects, in the order given.

    >>> ablations_from_overrides(["+ablation=[no_dw_conv,sigmoid]", "seed=1"])
    ['no_dw_conv', 'sigmoid']
    """
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == "ablation":
            value = override.value()
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    return []


def run_name(overrides: Sequence[str], seed: int) -> str:
    """``<ablations>-s<seed>[-<hash of the other overrides>]``, ablations sorted or ``default``.

    >>> run_name(["+ablation=[sigmoid,no_dw_conv]", "seed=2"], 2)
    'no_dw_conv+sigmoid-s2'
    >>> run_name(["lka.kernel_size=35", "logger=none"], 0)
    'default-s0-947adf13'
    """
    ablations = ablations_from_overrides(overrides)
    hashed = [
        o.input_line
        for o in OverridesParser.create().parse_overrides(list(overrides))
        if o.key_or_group not in _NOT_HASHED
        and o.key_or_group.split(".")[0] not in _NOT_HASHED_GROUPS
    ]
    name = f"{'+'.join(sorted(ablations)) or 'default'}-s{seed}"
    if hashed:
        name += "-" + hashlib.sha1("\n".join(sorted(hashed)).encode()).hexdigest()[:8]
    return name


def load_run_model(run_dir: str | Path, which: str = "best", **timm_kwargs: Any) -> torch.nn.Module:
    """The trained model of a run (``best`` or ``last`` checkpoint), in eval mode on CPU.

    ``timm_kwargs`` go to ``timm.create_model`` with the trained weights, e.g.
    ``features_only=True, out_indices=(1, 2, 3), feature_cls="getter"`` for a backbone.
    """
    if which not in ("best", "last"):
        raise ValueError(f"which={which!r}: must be 'best' or 'last'")
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {which} checkpoint (has the run finished an epoch?)")
    state = checkpoint.load(path)
    # Checkpoints written before ModelSpec carry ``model_args``; from_dict reads both.
    spec = ModelSpec.from_dict(state.get("model_spec") or state["model_args"])
    model = spec.build()
    model.load_state_dict(state["model"])  # strict: the checkpoint matches the run's model
    if timm_kwargs:
        # timm's own route for weights into a wrapped model: loaded before features_only wraps it.
        model = spec.build(
            pretrained=True,
            pretrained_cfg_overlay=dict(state_dict=model.state_dict()),
            **timm_kwargs,
        )
    return model.eval()
