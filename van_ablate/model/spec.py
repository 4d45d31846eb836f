"""One description of the network a run trains: which VAN, its LKA, its head and its input.

Training builds from it, ``results.json`` records it, the complexity tables count it and a
finished run's model is rebuilt from it, so it has one shape on the whole way::

    spec = ModelSpec("van_b0", lka=LKASpec(kernel_size=7), num_classes=10, img_size=64)
    model = spec.build()            # timm.create_model("van_b0", lka=..., dims=..., ...)
    spec.cost()["flops_paper"]      # closed form, and fvcore's count beside it
    ModelSpec.from_dict(spec.to_dict()) == spec

Architecture fields left as None take the registered model's values (Table 2 of "Visual
Attention Network", :data:`van_ablate.model.van.ARCHS`), so a spec always holds the full
architecture.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, List, NamedTuple, Optional  # noqa: UP035  (OmegaConf reads these)

import timm
import torch
from torch import nn

from van_ablate import checks
from van_ablate.errors import ConfigError
from van_ablate.model.complexity import Cost, count_cost, van_cost
from van_ablate.model.lka import LKASpec
from van_ablate.model.van import ARCHS

__all__ = ["ModelConfig", "ModelSpec", "StepMemory", "step_memory"]

_ARCH_FIELDS = ("dims", "depths", "mlp_ratios")
# Strides of van.py's patch embeds (7x7/4, then 3x3/2 per stage; tests check them against the
# model): a stage's map is ceil(previous side / stride) wide.
STRIDES = (4, 2, 2, 2)


@dataclasses.dataclass
class ModelConfig:
    """``model`` config group (``conf/model/*.yaml``): which VAN and what to change in it.

    Every null takes the registered model's value (:data:`van_ablate.model.van.ARCHS`); set a list
    of 4 to change widths, depths or MLP ratios. :meth:`ModelSpec.from_config` checks it.
    """

    name: str = "van_proxy"
    layer_scale: bool = True
    drop_path_rate: Optional[float] = None  # noqa: UP045  (OmegaConf reads these annotations)
    dims: Optional[List[int]] = None  # noqa: UP006, UP045
    depths: Optional[List[int]] = None  # noqa: UP006, UP045
    mlp_ratios: Optional[List[float]] = None  # noqa: UP006, UP045


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A VAN from the registry with every argument that changes its weights or its cost.

    >>> spec = ModelSpec("van_b0", num_classes=10)
    >>> spec.dims, spec.depths, spec.drop_path_rate
    ((32, 64, 160, 256), (3, 3, 5, 2), 0.1)
    >>> ModelSpec("resnet50")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    van_ablate.errors.ConfigError: model='resnet50': must be one of van_b0, van_b1, ...
    """

    name: str = "van_b0"
    lka: LKASpec = dataclasses.field(default_factory=LKASpec)
    layer_scale: bool = True
    num_classes: int = 1000
    img_size: int = 224
    dims: tuple[int, ...] | None = None  # None: the registered model's
    depths: tuple[int, ...] | None = None
    mlp_ratios: tuple[float, ...] | None = None
    drop_path_rate: float | None = None  # None: the registered model's official value
    in_chans: int = 3

    def __post_init__(self) -> None:
        checks.one_of("model", self.name, ARCHS)
        arch = ARCHS[self.name]
        # frozen: resolve the defaults through object.__setattr__, as dataclasses document.
        for key in _ARCH_FIELDS:
            value = arch[key] if getattr(self, key) is None else getattr(self, key)
            object.__setattr__(self, key, tuple(value))
        if self.drop_path_rate is None:
            object.__setattr__(self, "drop_path_rate", arch["drop_path_rate"])
        object.__setattr__(self, "lka", LKASpec.from_any(self.lka))
        stages = len(arch["dims"])
        for key in _ARCH_FIELDS:
            value = getattr(self, key)
            if len(value) != stages or not all(_positive(v) for v in value):
                finite = checks.finite_word(*value)
                allowed = f"must be {stages} positive {finite}numbers (one per stage) or null"
                raise ConfigError(f"model.{key}", list(value), allowed)
        if not isinstance(self.layer_scale, bool):
            raise ConfigError("model.layer_scale", self.layer_scale, "must be true or false")
        checks.in_range("model.drop_path_rate", self.drop_path_rate, 0.0, 1.0, high_open=True)
        checks.at_least("num_classes", self.num_classes, 0)
        checks.at_least("img_size", self.img_size, 1)
        checks.at_least("in_chans", self.in_chans, 1)
        # Each patch embed must get a map at least its stride wide: at 16 px stage 4 would
        # "downsample" a 1 x 1 map, seeing the image in 1 of its 9 taps.
        if self.img_size < MIN_IMG_SIZE:
            strides = " x ".join(map(str, STRIDES))
            why = f"the patch embeds downsample by {strides}; smaller, one gets a 1 x 1 map"
            checks.at_least("data.img_size", self.img_size, MIN_IMG_SIZE, why=why)
        self.lka.check_fits(self.feature_sizes[0], img_size=self.img_size)

    @property
    def feature_sizes(self) -> tuple[int, ...]:
        """Side of each stage's feature map for an ``img_size`` x ``img_size`` input.

        >>> ModelSpec("van_b0", img_size=224).feature_sizes, ModelSpec(img_size=64).feature_sizes
        ((56, 28, 14, 7), (16, 8, 4, 2))
        """
        return feature_sizes(self.img_size)

    @classmethod
    def from_config(
        cls,
        model: Any,
        lka: LKASpec | Mapping[str, Any] | None,
        *,
        num_classes: int,
        img_size: int,
    ) -> ModelSpec:
        """The spec of the job's ``model`` group (a dataclass or mapping), ``lka`` and data.

        ``ModelSpec.from_config(cfg.model, cfg.lka, num_classes=10, img_size=64)``
        """
        fields = model if isinstance(model, Mapping) else dataclasses.asdict(model)
        return cls(
            name=fields["name"],
            lka=LKASpec.from_any(lka),
            layer_scale=fields.get("layer_scale", True),
            num_classes=num_classes,
            img_size=img_size,
            drop_path_rate=fields.get("drop_path_rate"),
            **{key: fields.get(key) for key in _ARCH_FIELDS},
        )

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict` (``lka.resolved_dilation`` is derived, so it is dropped).

        Also reads the ``model_args`` of checkpoints written before ModelSpec (``model_name``
        instead of ``name``, and no ``img_size``).
        """
        fields = dict(value)
        if "model_name" in fields:
            fields["name"] = fields.pop("model_name")
        lka = dict(fields.pop("lka", None) or {})
        lka.pop("resolved_dilation", None)
        checks.check_known_keys("model", fields, cls)
        return cls(lka=LKASpec.from_any(lka), **fields)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: lists for the stage tuples, the LKA with its resolved dilation."""
        out = dataclasses.asdict(self)
        out["lka"] = self.lka.to_dict()
        for key in _ARCH_FIELDS:
            out[key] = list(out[key])
        return out

    def timm_kwargs(self) -> dict[str, Any]:
        """The keyword arguments :meth:`build` gives ``timm.create_model`` besides the name."""
        return {
            "lka": self.lka,
            "layer_scale": self.layer_scale,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "drop_path_rate": self.drop_path_rate,
            **{key: getattr(self, key) for key in _ARCH_FIELDS},
        }

    def build(self, **kwargs: Any) -> nn.Module:
        """The model, freshly initialised from the current RNG; ``kwargs`` go to timm as well."""
        return timm.create_model(self.name, **{**self.timm_kwargs(), **kwargs})

    def closed_cost(self) -> Cost:
        """Params and FLOPs from the architecture alone (:func:`.complexity.van_cost`)."""
        return van_cost(
            self.dims,
            self.depths,
            self.mlp_ratios,
            self.lka,
            img_size=self.img_size,
            num_classes=self.num_classes,
            in_chans=self.in_chans,
            layer_scale=self.layer_scale,
        )

    def counted_cost(self) -> Cost:
        """fvcore's count of the built model on one image; the caller's RNG stream is untouched."""
        with torch.random.fork_rng(devices=[]):  # weight init must not shift a run's seeded stream
            model = self.build()
        return count_cost(model, self.img_size, self.in_chans)

    def cost(self) -> dict[str, int]:
        """Closed-form and counted Params, MACs and paper FLOPs, as written to results.json.

        Keys: ``params`` / ``params_counted``, ``macs`` / ``macs_counted`` (conv + linear
        multiply-adds), ``flops_paper`` / ``flops_paper_counted`` (MACs + conv-bias adds +
        BatchNorm + LayerNorm, mmcv's count), ``img_size``. Closed form and count agree exactly.

        >>> ModelSpec("van_b0").cost()["flops_paper"]  # doctest: +SKIP
        880211328
        """
        closed, counted = self.closed_cost(), self.counted_cost()
        return {
            "params": closed.params,
            "params_counted": counted.params,
            "macs": closed.macs,
            "macs_counted": counted.macs,
            "flops_paper": closed.flops_paper,
            "flops_paper_counted": counted.flops_paper,
            "img_size": self.img_size,
        }

    def step_memory(
        self, batch_size: int, *, activation_bytes: int = 4, state_copies: int = 4
    ) -> StepMemory:
        """:func:`step_memory` of this model for a batch of ``batch_size`` images, counted on the
        meta device (no activation is allocated; the weights are built once on CPU, as timm's
        constructor needs real tensors). The caller's RNG stream is untouched.

        >>> ModelSpec("van_proxy", num_classes=10, img_size=64).step_memory(128)
        StepMemory(activations=141562880, states=5375648)
        """
        with torch.random.fork_rng(devices=[]):
            model = self.build().to("meta")
        shape = (self.in_chans, self.img_size, self.img_size)
        return step_memory(
            model,
            shape,
            batch_size,
            activation_bytes=activation_bytes,
            state_copies=state_copies,
        )

    def changed_arch(self) -> dict[str, list]:
        """The architecture fields that differ from the registered model's (NAS trials)."""
        arch = ARCHS[self.name]
        return {
            key: list(getattr(self, key))
            for key in _ARCH_FIELDS
            if tuple(getattr(self, key)) != tuple(arch[key])
        }


def feature_sizes(img_size: int) -> tuple[int, ...]:
    """Side of each stage's map: a k x k conv (k odd) padded by k // 2 gives ceil(side / stride)."""
    sides = [img_size]
    for stride in STRIDES:
        sides.append(-(-sides[-1] // stride))
    return tuple(sides[1:])


def _smallest_img_size() -> int:
    """The smallest image whose every patch embed gets a map at least its stride wide (17)."""
    n = 1
    while any(s < stride for s, stride in zip((n, *feature_sizes(n)), STRIDES, strict=False)):
        n += 1
    return n


MIN_IMG_SIZE = _smallest_img_size()


class StepMemory(NamedTuple):
    """Bytes one training step holds, as :func:`step_memory` estimates them."""

    activations: int  # module outputs kept for the backward pass
    states: int  # weights, grads and optimizer state

    @property
    def total(self) -> int:
        return self.activations + self.states


def step_memory(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    *,
    activation_bytes: int = 4,
    state_copies: int = 4,
) -> StepMemory:
    """Estimate the memory of one training step of ``model`` (on the meta device, so nothing is
    allocated) on a batch of ``batch_size`` inputs of ``input_shape`` (one sample's).

    Activations: the output elements of every leaf module for one sample x ``batch_size`` x
    ``activation_bytes`` (4 in fp32, 2 under bf16 autocast); an output that is its input
    (Identity, Dropout and DropPath in eval mode) counts once. Elementwise sums and products
    between modules are left out, so the real peak is higher. States: ``state_copies`` fp32
    copies of the parameters (weights, grads and AdamW's two moments: 4).

    >>> conv = nn.Conv2d(3, 8, 3, padding=1, device="meta")  # 8 x 10 x 10 outputs, 224 params
    >>> step_memory(conv, (3, 10, 10), batch_size=4)  # 800 x 4 x 4 B; 224 x 4 copies x 4 B
    StepMemory(activations=12800, states=3584)
    """
    elements = 0

    def count(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal elements
        if isinstance(output, torch.Tensor) and not any(output is x for x in inputs):
            elements += output.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(count) for m in leaves]
    training = model.training
    # Eval mode: BatchNorm takes a batch of one, and dropout returns its input (counted once).
    model.eval()
    try:
        with torch.no_grad():
            model(torch.empty(1, *input_shape, device="meta"))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return StepMemory(elements * batch_size * activation_bytes, params * state_copies * 4)


def _positive(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )
