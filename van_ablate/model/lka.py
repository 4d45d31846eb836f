"""Large Kernel Attention with every part the paper ablates behind a switch.

Implements Sec. 3.1-3.2 of "Visual Attention Network" (Guo et al. 2022): a K x K convolution is
decomposed into a (2d-1)x(2d-1) depth-wise conv (DW-Conv), a ceil(K/d) x ceil(K/d) depth-wise
conv with dilation d (DW-D-Conv) and a 1x1 conv, and the result multiplies the input. Each part
is a switch of :class:`LKASpec`, so every row of Table 3 and of the kernel-size table is a spec.
With the defaults the module is the official ``LKA`` (same parameters, same state-dict keys).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from van_ablate import checks
from van_ablate.errors import ConfigError

GATES = ("none", "sigmoid")
COMBINES = ("mul", "add", "none")


def eq3_cost(kernel_size: int, dilation: int) -> int:
    """Per-channel weight count of the decomposition, the part of Eq. 3 that depends on d.

    >>> eq3_cost(21, 3)  # ceil(21/3)^2 + (2*3-1)^2
    74
    """
    return math.ceil(kernel_size / dilation) ** 2 + (2 * dilation - 1) ** 2


def auto_dilation(kernel_size: int) -> int:
    """The dilation that minimises Eq. 3 for ``kernel_size``, ties going to the smaller d.

    >>> [auto_dilation(k) for k in (7, 14, 21, 28)]
    [2, 3, 3, 4]
    """
    checks.at_least("lka.kernel_size", kernel_size, 1)
    return min(range(1, kernel_size + 1), key=lambda d: (eq3_cost(kernel_size, d), d))


# Not frozen: OmegaConf makes a frozen dataclass's node read-only, and Hydra merges the ``lka``
# group and overrides into this very class; ``unsafe_hash`` keeps specs usable as cache keys.
@dataclasses.dataclass(unsafe_hash=True)
class LKASpec:
    """Which Large Kernel Attention to build; the defaults are the paper's LKA (K=21, d=3).

    Also the schema of the ``lka`` config group: Hydra composes onto it and builds it with
    ``OmegaConf.to_object``, which runs the checks below.

    >>> LKASpec(kernel_size=28).resolved_dilation
    4
    >>> LKASpec(gate="softmax")
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: lka.gate='softmax': must be one of none, sigmoid
    """

    kernel_size: int = 21
    dilation: Any = "auto"  # "auto" or an integer >= 1; OmegaConf has no int | str node
    dw_conv: bool = True
    dwd_conv: bool = True
    pw_conv: bool = True
    gate: str = "none"
    combine: str = "mul"
    dense: bool = False

    def __post_init__(self) -> None:
        checks.at_least("lka.kernel_size", self.kernel_size, 1)
        if self.dilation != "auto":
            d = self.dilation
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ConfigError("lka.dilation", d, "must be 'auto' or an integer >= 1")
        for name in ("dw_conv", "dwd_conv", "pw_conv", "dense"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"lka.{name}", getattr(self, name), "must be true or false")
        checks.one_of("lka.gate", self.gate, GATES)
        checks.one_of("lka.combine", self.combine, COMBINES)
        branches = (self.dw_conv, self.dwd_conv, self.pw_conv)
        if self.dense and not all(branches):
            raise ConfigError(
                "lka.dense",
                True,
                "replaces the whole decomposition; leave dw_conv, dwd_conv and pw_conv true",
            )
        if not self.dense and not any(branches):
            raise ConfigError(
                "lka.dw_conv",
                False,
                "with dwd_conv and pw_conv also false no module is left; keep at least one "
                "branch or set dense=true",
            )

    @classmethod
    def from_any(cls, value: LKASpec | Mapping[str, Any] | None) -> LKASpec:
        """Accept a spec, a plain mapping (YAML, JSON, DictConfig) or None for the default."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        checks.check_known_keys("lka", value, cls, word="field")
        return cls(**dict(value))

    @property
    def resolved_dilation(self) -> int:
        """d as an integer: the given one, or the Eq. 3 minimiser when ``dilation='auto'``."""
        if self.dilation == "auto":
            return auto_dilation(self.kernel_size)
        return int(self.dilation)

    @property
    def dw_kernel(self) -> int:
        """Side of the DW-Conv: 2d - 1."""
        return 2 * self.resolved_dilation - 1

    @property
    def dwd_kernel(self) -> int:
        """Side of the DW-D-Conv: ceil(K / d)."""
        return math.ceil(self.kernel_size / self.resolved_dilation)

    @property
    def receptive_field(self) -> int:
        """Side of the input window one output pixel depends on."""
        if self.dense:
            return self.kernel_size
        d = self.resolved_dilation
        extent = 1
        if self.dw_conv:
            extent += self.dw_kernel - 1
        if self.dwd_conv:
            extent += d * (self.dwd_kernel - 1)
        return extent

    def check_fits(self, map_side: int, *, img_size: int) -> None:
        """Refuse a kernel far larger than the largest feature map (``map_side`` px, stage 1's
        at ``img_size``): the widest single conv may span at most ``2 * (2 * map_side - 1)``.

        >>> LKASpec(kernel_size=28).check_fits(16, img_size=64)  # the paper's K=7..28 fit
        >>> LKASpec(kernel_size=201).check_fits(16, img_size=64)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        van_ablate.errors.ConfigError: lka.kernel_size=201: the DW-D-Conv (d=10) spans 201 px, ...
        """
        # A tap more than map_side - 1 px off centre only ever multiplies zero padding; past
        # twice that reach, over half of the conv's span is such taps.
        reach = 2 * map_side - 1
        d = self.resolved_dilation
        if self.dense:
            name, span = "dense conv", self.kernel_size
        elif self.dwd_conv and d * (self.dwd_kernel - 1) + 1 >= self.dw_kernel:
            name, span = f"DW-D-Conv (d={d})", d * (self.dwd_kernel - 1) + 1
        else:
            name, span = f"DW-Conv (d={d})", self.dw_kernel if self.dw_conv else 1
        if span <= 2 * reach:
            return
        key, value, largest = "lka.kernel_size", self.kernel_size, f"kernel_size <= {2 * reach}"
        if name.startswith("DW-Conv"):  # its 2d - 1 window grows with the dilation alone
            key, value, largest = "lka.dilation", self.dilation, f"dilation <= {reach}"
        raise ConfigError(
            key,
            value,
            f"the {name} spans {span} px, over twice the {reach} px in which its taps reach the "
            f"{map_side} px map of stage 1 at data.img_size={img_size}; allowed: a span <= "
            f"{2 * reach} px (any {largest})",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain fields plus the resolved dilation, as written to results and reports."""
        return {**dataclasses.asdict(self), "resolved_dilation": self.resolved_dilation}


class SamePadConv2d(nn.Conv2d):
    """Conv2d whose output keeps the input's size for any kernel and dilation.

    ``nn.Conv2d(padding='same')`` pads asymmetrically only through a slower path and is not
    scriptable with dilation on every backend, so odd total padding is applied explicitly here.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1, **kwargs):
        total = dilation * (kernel_size - 1)
        symmetric = total % 2 == 0
        super().__init__(
            in_ch,
            out_ch,
            kernel_size,
            padding=total // 2 if symmetric else 0,
            dilation=dilation,
            **kwargs,
        )
        # (left, right, top, bottom) for F.pad; None when the conv's own padding suffices.
        self.extra_pad = None if symmetric else (total // 2, total - total // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return super().forward(x)


def make_conv(in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1, **kwargs) -> nn.Conv2d:
    """A size-preserving conv; a plain ``nn.Conv2d`` whenever symmetric padding works."""
    total = dilation * (kernel_size - 1)
    if total % 2 == 0:
        pad = total // 2
        return nn.Conv2d(in_ch, out_ch, kernel_size, padding=pad, dilation=dilation, **kwargs)
    return SamePadConv2d(in_ch, out_ch, kernel_size, dilation=dilation, **kwargs)


class LKA(nn.Module):
    """Large Kernel Attention (Fig. 2/3); ``spatial_gating_unit`` in the official code.

    Keeps the official names ``conv0`` (DW-Conv), ``conv_spatial`` (DW-D-Conv) and ``conv1``
    (1x1) so official checkpoints load; a switched-off branch is simply absent. ``dense``
    replaces the three with one full K x K conv, also named ``conv0``.
    """

    def __init__(self, dim: int, spec: LKASpec | Mapping[str, Any] | None = None):
        super().__init__()
        self.spec = spec = LKASpec.from_any(spec)
        d = spec.resolved_dilation
        self.conv0 = self.conv_spatial = self.conv1 = None
        if spec.dense:
            self.conv0 = make_conv(dim, dim, spec.kernel_size)
        else:
            if spec.dw_conv:
                self.conv0 = make_conv(dim, dim, spec.dw_kernel, groups=dim)
            if spec.dwd_conv:
                self.conv_spatial = make_conv(dim, dim, spec.dwd_kernel, dilation=d, groups=dim)
            if spec.pw_conv:
                self.conv1 = nn.Conv2d(dim, dim, 1)
        self.sigmoid = spec.gate == "sigmoid"
        self.combine = spec.combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = x
        if self.conv0 is not None:
            attn = self.conv0(attn)
        if self.conv_spatial is not None:
            attn = self.conv_spatial(attn)
        if self.conv1 is not None:
            attn = self.conv1(attn)
        if self.sigmoid:
            attn = attn.sigmoid()
        if self.combine == "mul":
            return x * attn
        if self.combine == "add":
            return x + attn
        return attn

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"kernel_size={s.kernel_size}, dilation={s.resolved_dilation}, gate={s.gate}, "
            f"combine={s.combine}, dense={s.dense}"
        )
