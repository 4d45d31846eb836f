"""Paired seeds: a model's initial weights as a function of (seed, parameter name, shape).

The rows of an ablation (Table 3, the kernel-size table) are compared seed by seed, so a seed
must fix what a row does not change. Building a row's model draws its weights from the global
RNG in construction order: a row that drops a module (``no_dw_conv``) or resizes one (``k7``,
``dense_conv``) shifts the draws of every module built after it, and two rows with one seed
start from different weights even where their architectures agree. :func:`init_keyed` redraws
each parameter with the model's own init rule from an RNG keyed by the seed, the parameter's
name and its shape, so rows sharing a parameter (same name, same shape) start it from the same
tensor::

    model = spec.build()
    init_keyed(model, seed)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from van_ablate.model.van import init_weights

__all__ = ["init_keyed", "parameter_seed"]


def parameter_seed(seed: int, name: str, shape: tuple[int, ...] | torch.Size) -> int:
    """A 64-bit seed for one parameter, stable across processes and Python versions.

    >>> parameter_seed(0, "head.weight", (10, 96)) == parameter_seed(0, "head.weight", (10, 96))
    True
    >>> parameter_seed(0, "head.weight", (10, 96)) == parameter_seed(1, "head.weight", (10, 96))
    False
    """
    # hashlib, not hash(): Python salts str hashes per process.
    key = f"{seed}/{name}/{tuple(shape)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def init_keyed(
    model: nn.Module, seed: int, init: Callable[[nn.Module], None] = init_weights
) -> nn.Module:
    """Redraw every parameter of ``model`` (on the CPU) with its init rule under an RNG seeded by
    :func:`parameter_seed`; returns ``model``. The global RNG states are left as they were.

    A module's rule is what building the model did to it: its own ``reset_parameters`` (torch's
    layers), then ``init`` (the rule the model applies to every module; VAN's by default). A
    parameter that no rule draws (VAN's LayerScale, BatchNorm) keeps its value.

    >>> import timm, van_ablate
    >>> a = init_keyed(timm.create_model("van_proxy"), seed=0)
    >>> b = init_keyed(timm.create_model("van_proxy", lka={"dw_conv": False}), seed=0)
    >>> torch.equal(a.head.weight, b.head.weight)
    True
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("init_keyed draws on the CPU: call it before moving the model")
    for module_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        drawn = {}
        for name, param in own.items():
            full_name = f"{module_name}.{name}" if module_name else name
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(parameter_seed(seed, full_name, param.shape))
                # The rule sets all of the module's parameters; this draw keeps only this one.
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                init(module)
                drawn[name] = param.detach().clone()
        with torch.no_grad():
            for name, value in drawn.items():
                own[name].copy_(value)
    return model
