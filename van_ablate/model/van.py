"""The VAN family (VAN-B0 ... VAN-B6) as a timm model file, with a switchable LKA.

Architecture, initialisation and state-dict layout follow the official code of "Visual
Attention Network" (Guo et al. 2022, Sec. 3.3 and Table 2), so its checkpoints load with
``strict=True`` when every switch is at its default. Importing :mod:`van_ablate` registers
``van_b0`` ... ``van_b6`` and the CPU-sized ``van_proxy`` with timm::

    import timm, van_ablate
    model = timm.create_model("van_b0", lka={"kernel_size": 7}, num_classes=10)
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from van_ablate.model.lka import LKA, LKASpec

__all__ = ["VAN", "ARCHS", "init_weights"]

MLP_RATIOS = (8, 8, 4, 4)  # every model of Table 2 uses these


def _arch(dims: tuple, depths: tuple, drop_path_rate: float) -> dict[str, Any]:
    return dict(dims=dims, depths=depths, mlp_ratios=MLP_RATIOS, drop_path_rate=drop_path_rate)


# The one table of architectures; conf/model/*.yaml only name an entry. The official models as
# the paper's Table 2 and the official code give them (a test checks them against the paper's
# figures): plain data of the model's own, so the model reads no config file.
ARCHS: dict[str, dict[str, Any]] = {
    "van_b0": _arch((32, 64, 160, 256), (3, 3, 5, 2), 0.1),
    "van_b1": _arch((64, 128, 320, 512), (2, 2, 4, 2), 0.1),
    "van_b2": _arch((64, 128, 320, 512), (3, 3, 12, 3), 0.1),
    "van_b3": _arch((64, 128, 320, 512), (3, 5, 27, 3), 0.2),
    "van_b4": _arch((64, 128, 320, 512), (3, 6, 40, 3), 0.2),
    "van_b5": _arch((96, 192, 480, 768), (3, 3, 24, 3), 0.2),
    "van_b6": _arch((96, 192, 384, 768), (6, 6, 90, 6), 0.3),
    # Same blocks at a width and depth a 2-core CPU trains in minutes (not in the paper).
    "van_proxy": _arch((16, 32, 64, 96), (1, 1, 2, 1), 0.0),
}
LAYER_SCALE_INIT = 1e-2


class Mlp(nn.Module):
    """1x1 -> 3x3 depth-wise -> GELU -> 1x1, the official ``Mlp`` with its ``DWConv``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwconv(self.fc1(x)))
        return self.drop(self.fc2(self.drop(x)))


class DWConv(nn.Module):
    """Holds the conv as ``dwconv.dwconv`` so the official state-dict keys match."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class Attention(nn.Module):
    """proj_1 -> GELU -> LKA -> proj_2, plus the official code's inner shortcut."""

    def __init__(self, dim: int, lka: LKASpec):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(dim, lka)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.spatial_gating_unit(self.activation(self.proj_1(x)))
        return self.proj_2(x) + shortcut


class Block(nn.Module):
    """BN -> Attention and BN -> Mlp, each scaled per channel (LayerScale) and residual."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float,
        lka: LKASpec,
        layer_scale: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = Attention(dim, lka)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        if layer_scale:
            self.layer_scale_1 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))
            self.layer_scale_2 = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.norm1(x))
        if self.layer_scale_1 is not None:
            a = self.layer_scale_1[:, None, None] * a
        x = x + self.drop_path(a)
        m = self.mlp(self.norm2(x))
        if self.layer_scale_2 is not None:
            m = self.layer_scale_2[:, None, None] * m
        return x + self.drop_path(m)


class Blocks(nn.Sequential):
    """A stage's blocks (``block1`` ... ``block4``, keys as official), optionally checkpointed."""

    def __init__(self, *blocks: Block):
        super().__init__(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self, x)
        for blk in self:
            x = blk(x)
        return x


class OverlapPatchEmbed(nn.Module):
    """Strided conv + BatchNorm between stages (7x7/4 first, 3x3/2 after)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class VAN(nn.Module):
    """Visual Attention Network; ``lka`` switches the attention of every block."""

    def __init__(
        self,
        dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        mlp_ratios: Sequence[float] = MLP_RATIOS,
        lka: LKASpec | Mapping[str, Any] | None = None,
        layer_scale: bool = True,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool={global_pool!r}: must be 'avg' or ''")
        if len(dims) != 4 or len(depths) != 4:
            raise ValueError(f"dims={dims!r}, depths={depths!r}: VAN has 4 stages, give 4 of each")
        self.lka = LKASpec.from_any(lka)
        self.layer_scale = layer_scale
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_stages = len(dims)
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False
        self.feature_info = []
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        cur = 0
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            embed = OverlapPatchEmbed(
                in_chans if i == 0 else dims[i - 1],
                dim,
                patch_size=7 if i == 0 else 3,
                stride=4 if i == 0 else 2,
            )
            blocks = Blocks(
                *(
                    Block(dim, mlp_ratios[i], self.lka, layer_scale, drop_rate, dpr[cur + j])
                    for j in range(depth)
                )
            )
            cur += depth
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            # LayerNorm over channels of NCHW (weight/bias keys as the official nn.LayerNorm).
            setattr(self, f"norm{i + 1}", LayerNorm2d(dim, eps=1e-6))
            # A stage's output is its norm's output: what the paper's dense-prediction heads take.
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"norm{i + 1}"))
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"layer_scale_1", "layer_scale_2"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^patch_embed1", blocks=r"^(?:patch_embed|block|norm)(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for i in range(4):
            getattr(self, f"block{i + 1}").grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``i`` (0-based): patch embed, blocks, channel LayerNorm; NCHW in and out."""
        # Spelled out per stage: TorchScript cannot look modules up by a computed name, and the
        # official flat names (patch_embed1, block1, norm1, ...) must stay for its checkpoints.
        if i == 0:
            return self.norm1(self.block1(self.patch_embed1(x)))
        if i == 1:
            return self.norm2(self.block2(self.patch_embed2(x)))
        if i == 2:
            return self.norm3(self.block3(self.patch_embed3(x)))
        return self.norm4(self.block4(self.patch_embed4(x)))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (after each stage's norm, as timm's PVT-v2) plus the final features.

        ``indices``: the last n stages if an int, all if None, else the listed (negative from
        the end). ``norm`` is accepted for timm's interface; every stage output is already
        normalised, so it changes nothing.
        """
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = self.num_stages - 1
        if stop_early and not torch.jit.is_scripting():
            last = max_index
        intermediates: list[torch.Tensor] = []
        for i in range(last + 1):
            x = self.stage(i, x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (replaced by ``nn.Identity``).

        ``prune_norm`` is accepted for timm's interface: each norm belongs to its stage's output.
        """
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        prune_end = max_index < self.num_stages - 1
        for i in range(max_index + 1, self.num_stages):
            for name in ("patch_embed", "block", "norm"):
                setattr(self, f"{name}{i + 1}", nn.Identity())
        if prune_end:
            # The features now end at the last kept stage; a head sized for stage 4 goes too.
            self.num_stages = max_index + 1
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_stages):
            x = self.stage(i, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def init_weights(m: nn.Module) -> None:
    """The official init of one module: trunc-normal Linear, He-normal Conv2d on fan-out, zero
    biases (``VAN`` applies it to every module; :func:`.keyed_init.init_keyed` reuses it)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.data.zero_()


def checkpoint_filter_fn(state_dict: dict[str, Any], model: VAN) -> dict[str, torch.Tensor]:
    """Unwrap official checkpoints ({'state_dict': ...}) and drop a DDP 'module.' prefix."""
    for key in ("state_dict", "model", "state_dict_ema"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
            break
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _create_van(variant: str, pretrained: bool = False, **kwargs: Any) -> VAN:
    arch = dict(ARCHS[variant])
    kwargs.setdefault("drop_path_rate", arch.pop("drop_path_rate"))
    return build_model_with_cfg(
        VAN,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        **{**arch, **kwargs},
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # No url or hub id: weights come only from a local file (pretrained_cfg_overlay=dict(file=)).
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "patch_embed1.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2202.09741",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        **{f"{name}.untrained": _cfg() for name in ARCHS if name != "van_proxy"},
        "van_proxy.untrained": _cfg(
            num_classes=10, input_size=(3, 64, 64), pool_size=(2, 2), crop_pct=1.0
        ),
    }
)


@register_model
def van_b0(pretrained: bool = False, **kwargs: Any) -> VAN:
    return _create_van("van_b0", pretrained, **kwargs)


@register_model
def van_b1(pretrained: bool = False, **kwargs: Any) -> VAN:
    return _create_van("van_b1", pretrained, **kwargs)


@register_model
def van_b2(pretrained: bool = False, **kwargs: Any) -> VAN:
    return _create_van("van_b2", pretrained, **kwargs)


@register_model
def van_b3(pretrained: bool = False, **kwargs: Any) -> VAN:
    return _create_van("van_b3", pretrained, **kwargs)


@register_model
def van_b4(pretrained: bool = False, **kwargs: Any) -> VAN:
    return _create_van("van_b4", pretrained, **kwargs)


@register_model
def van_b5(pretrained: bool = False, **kwargs: Any) -> VAN:
    return _create_van("van_b5", pretrained, **kwargs)


@register_model
def van_b6(pretrained: bool = False, **kwargs: Any) -> VAN:
    return _create_van("van_b6", pretrained, **kwargs)


@register_model
def van_proxy(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B0's blocks at 1/2 width and 5 blocks: a few CPU minutes at 64x64 (not in the paper)."""
    return _create_van("van_proxy", pretrained, **kwargs)
