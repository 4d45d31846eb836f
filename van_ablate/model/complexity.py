"""Params and FLOPs of a VAN with any LKA: closed forms, fvcore counts and the paper's figures.

Sec. 3.2 of "Visual Attention Network" (Guo et al. 2022) gives the cost of LKA as Eq. 3
(params, biases left out) and Eq. 4 (that times H x W); Table 3, the kernel-size table and the
model table print Params and FLOPs for whole models. This module computes both from the
config alone (closed form) and from the built model (fvcore), in named conventions:

- ``params``: every parameter (weights, biases, norm affines, LayerScale); BatchNorm running
  statistics are buffers and are not counted.
- ``macs``: conv and linear multiply-adds, one multiply-add counted as one FLOP (fvcore's unit
  and the paper's).
- ``flops_paper``: ``macs`` plus one add per conv output element (the bias) plus two per
  BatchNorm and per LayerNorm element (scale and shift): the count of mmcv's
  ``get_model_complexity_info``, which the official VAN repositories use, and the only one
  that reproduces the paper's 0.88 G for VAN-B0 and the kernel-size table together. GELU,
  the attention product, LayerScale, residual adds and pooling are in neither convention.

A whole model's figures come from :meth:`van_ablate.model.spec.ModelSpec.cost`;
``python -m van_ablate.complexity`` prints the paper's tables with both figures beside them
(the command is :mod:`van_ablate.paper.tables`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Sequence
from math import prod
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts its focal loss on import, which torch 2.14 flags as deprecated.
    warnings.filterwarnings("ignore", ".*torch.jit.script", FutureWarning)
    from fvcore.nn import FlopCountAnalysis, parameter_count
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        batchnorm_flop_jit,
        conv_flop_jit,
        get_shape,
        linear_flop_jit,
    )

from van_ablate import checks
from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKASpec
from van_ablate.model.van import MLP_RATIOS

__all__ = [
    "Cost",
    "count_cost",
    "lka_cost",
    "lka_macs",
    "lka_params",
    "stage_sides",
    "van_cost",
]


@dataclasses.dataclass(frozen=True)
class Cost:
    """Params and operation counts of a network, split by convention (see the module docstring).

    >>> Cost(params=10, macs=100, bias_adds=4, bn_flops=8, ln_flops=2).flops_paper
    114
    """

    params: int = 0
    macs: int = 0  # conv + linear multiply-adds
    bias_adds: int = 0  # one per conv output element
    bn_flops: int = 0  # BatchNorm at inference: scale + shift per element
    ln_flops: int = 0  # LayerNorm: scale + shift per element (mmcv's count)

    def __add__(self, other: Cost) -> Cost:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return Cost(*(a + b for a, b in pairs))

    def __mul__(self, times: int) -> Cost:
        return Cost(*(a * times for a in dataclasses.astuple(self)))

    @property
    def flops_paper(self) -> int:
        """The paper's FLOPs: MACs + conv-bias adds + BatchNorm + LayerNorm."""
        return self.macs + self.bias_adds + self.bn_flops + self.ln_flops


def _conv(c_in: int, c_out: int, kernel: int, positions: int, groups: int = 1) -> Cost:
    """A biased conv producing ``positions`` output pixels per channel."""
    weights = c_in // groups * c_out * kernel * kernel
    return Cost(params=weights + c_out, macs=weights * positions, bias_adds=c_out * positions)


def _batch_norm(channels: int, positions: int) -> Cost:
    return Cost(params=2 * channels, bn_flops=2 * channels * positions)


def lka_cost(channels: int, lka: LKASpec | dict | None, positions: int) -> Cost:
    """Closed-form cost of one LKA module on ``positions`` pixels (every conv keeps the size)."""
    spec = LKASpec.from_any(lka)
    if spec.dense:
        return _conv(channels, channels, spec.kernel_size, positions)
    cost = Cost()
    if spec.dw_conv:
        cost += _conv(channels, channels, spec.dw_kernel, positions, groups=channels)
    if spec.dwd_conv:
        cost += _conv(channels, channels, spec.dwd_kernel, positions, groups=channels)
    if spec.pw_conv:
        cost += _conv(channels, channels, 1, positions)
    return cost


def lka_params(
    channels: int,
    kernel_size: int = 21,
    dilation: int | str = "auto",
    *,
    dw_conv: bool = True,
    dwd_conv: bool = True,
    pw_conv: bool = True,
    dense: bool = False,
    bias: bool = False,
) -> int:
    """Parameters of one LKA module; with the defaults and no biases this is Eq. 3.

    >>> C = 64
    >>> lka_params(C, 21, 3) == C * (7**2 + 5**2 + C)  # ceil(K/d)^2 + (2d-1)^2 + C
    True
    >>> lka_params(C, 21, 3, pw_conv=False, bias=True)
    4864
    """
    checks.at_least("channels", channels, 1)
    spec = LKASpec(kernel_size, dilation, dw_conv, dwd_conv, pw_conv, dense=dense)
    cost = lka_cost(channels, spec, positions=1)
    return cost.params if bias else cost.macs  # at one position a conv's MACs are its weights


def lka_macs(
    channels: int,
    kernel_size: int,
    dilation: int | str,
    height: int,
    width: int,
    *,
    dw_conv: bool = True,
    dwd_conv: bool = True,
    pw_conv: bool = True,
    dense: bool = False,
) -> int:
    """Multiply-adds of one LKA module on an H x W map; with the defaults this is Eq. 4.

    >>> lka_macs(64, 21, 3, 56, 56) == lka_params(64, 21, 3) * 56 * 56
    True
    """
    checks.at_least("channels", channels, 1)
    checks.at_least("height", height, 1)
    checks.at_least("width", width, 1)
    spec = LKASpec(kernel_size, dilation, dw_conv, dwd_conv, pw_conv, dense=dense)
    return lka_cost(channels, spec, positions=height * width).macs


def stage_sides(img_size: int, num_stages: int = 4) -> list[int]:
    """Side of the feature map in each stage: a 7x7/4 patch embed, then 3x3/2 ones.

    >>> stage_sides(224)
    [56, 28, 14, 7]
    """
    checks.at_least("img_size", img_size, 1)
    sides, side = [], img_size
    for i in range(num_stages):
        kernel, stride = (7, 4) if i == 0 else (3, 2)
        side = (side + 2 * (kernel // 2) - kernel) // stride + 1
        sides.append(side)
    return sides


def van_cost(
    dims: Sequence[int],
    depths: Sequence[int],
    mlp_ratios: Sequence[float] = MLP_RATIOS,
    lka: LKASpec | dict | None = None,
    *,
    img_size: int = 224,
    num_classes: int = 1000,
    in_chans: int = 3,
    layer_scale: bool = True,
) -> Cost:
    """Closed-form cost of a whole VAN (:mod:`van_ablate.model.van`) without building it.

    >>> c = van_cost((32, 64, 160, 256), (3, 3, 5, 2))  # VAN-B0
    >>> c.params, c.macs, c.flops_paper
    (4105800, 864224000, 880211328)
    """
    for key, values in (("depths", depths), ("mlp_ratios", mlp_ratios)):
        if len(values) != len(dims):
            raise ConfigError(
                key, list(values), f"needs one entry per stage, as dims has {len(dims)}"
            )
    spec = LKASpec.from_any(lka)
    total, c_in = Cost(), in_chans
    for i, (dim, depth, ratio, side) in enumerate(
        zip(dims, depths, mlp_ratios, stage_sides(img_size, len(dims)), strict=True)
    ):
        n = side * side
        hidden = int(dim * ratio)
        total += _conv(c_in, dim, 7 if i == 0 else 3, n) + _batch_norm(dim, n)
        block = (
            _batch_norm(dim, n) * 2
            + _conv(dim, dim, 1, n) * 2  # proj_1, proj_2
            + lka_cost(dim, spec, n)
            + _conv(dim, hidden, 1, n)  # mlp.fc1
            + _conv(hidden, hidden, 3, n, groups=hidden)  # mlp.dwconv
            + _conv(hidden, dim, 1, n)  # mlp.fc2
            + Cost(params=2 * dim * layer_scale)
        )
        total += block * depth + Cost(params=2 * dim, ln_flops=2 * dim * n)  # stage LayerNorm
        c_in = dim
    if num_classes > 0:
        head = dims[-1] * num_classes
        total += Cost(params=head + num_classes, macs=head)
    return total


def _conv_handle(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    """fvcore's conv count (MACs only) plus one add per output element when there is a bias."""
    counts = conv_flop_jit(inputs, outputs)
    counts["conv_bias"] = prod(get_shape(outputs[0])) if get_shape(inputs[2]) else 0
    return counts


def _layer_norm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """mmcv's LayerNorm count: two per element with an affine (scale and shift), else one."""
    return prod(get_shape(inputs[0])) * (2 if get_shape(inputs[2]) else 1)


def count_cost(model: nn.Module, img_size: int, in_chans: int = 3) -> Cost:
    """fvcore's count of ``model`` on one image, in the conventions of :class:`Cost`.

    fvcore counts conv and linear MACs and skips conv biases, so a handle adds them; its
    BatchNorm handle gives the two per element of inference; its LayerNorm handle counts five
    per element, so a handle gives mmcv's two; pooling is counted by neither convention.
    """
    checks.at_least("img_size", img_size, 1)
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, img_size, img_size, device=device)
    was_training = model.training
    model.eval()  # BatchNorm as at inference, where the paper counts it
    try:
        with torch.no_grad():
            analysis = (
                FlopCountAnalysis(model, x)
                .clear_op_handles()
                .set_op_handle(
                    **{
                        "aten::_convolution": _conv_handle,
                        "aten::linear": linear_flop_jit,
                        "aten::addmm": addmm_flop_jit,
                        "aten::batch_norm": batchnorm_flop_jit,
                        "aten::layer_norm": _layer_norm_handle,
                    }
                )
                .tracer_warnings("none")
                .unsupported_ops_warnings(False)
                .uncalled_modules_warnings(False)
            )
            ops = analysis.by_operator()
    finally:
        model.train(was_training)
    return Cost(
        params=parameter_count(model)[""],
        macs=ops["conv"] + ops["linear"] + ops["addmm"],
        bias_adds=ops["conv_bias"],
        bn_flops=ops["batch_norm"],
        ln_flops=ops["layer_norm"],
    )
