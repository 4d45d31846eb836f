"""Paired seeds: rows built with one seed start every parameter they share from the same tensor,
with the distribution of VAN's own init."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from van_ablate.model.keyed_init import init_keyed
from van_ablate.model.spec import ModelSpec
from van_ablate.paper.ablation import ablation_model


def row(name: str, seed: int = 0, *, keyed: bool = True, model: str = "van_proxy"):
    """The model of ablation row ``name`` as the training job builds it (global seed, build,
    keyed init)."""
    lka, layer_scale = ablation_model(name)
    timm.utils.random_seed(seed)
    net = ModelSpec(model, lka=lka, layer_scale=layer_scale, num_classes=10).build()
    return init_keyed(net, seed) if keyed else net


def params(model) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def drawn(name: str) -> bool:
    """Parameters VAN's init draws at random: conv and linear weights (not biases, norms or
    LayerScale, which start at constants)."""
    return name.endswith("weight") and "norm" not in name


@pytest.mark.parametrize("other", ["no_dw_conv", "no_pw_conv", "k7", "dense_conv", "no_attention"])
def test_rows_with_one_seed_share_the_initial_tensor_of_every_shared_parameter(other):
    base, ablated = params(row("baseline")), params(row(other))
    shared = [n for n in base if n in ablated and base[n].shape == ablated[n].shape]
    assert len(shared) > len(base) / 2
    for name in shared:
        assert torch.equal(base[name], ablated[name]), name
    resized = [n for n in base if n in ablated and base[n].shape != ablated[n].shape]
    if other in ("k7", "dense_conv"):  # the LKA's convs change shape: drawn afresh
        assert resized and all(n.endswith(("conv0.weight", "conv_spatial.weight")) for n in resized)


def test_without_the_keyed_init_rows_with_one_seed_start_apart():
    # What the keyed init fixes: a dropped module shifts every later draw of the global RNG.
    base = params(row("baseline", keyed=False))
    ablated = params(row("no_dw_conv", keyed=False))
    differ = [n for n in base if n in ablated and drawn(n) and not torch.equal(base[n], ablated[n])]
    assert "head.weight" in differ


def test_two_seeds_give_different_initial_tensors():
    a, b = params(row("baseline", seed=0)), params(row("baseline", seed=1))
    for name in a:
        assert torch.equal(a[name], b[name]) != drawn(name), name


def test_parameters_of_one_shape_under_different_names_start_apart():
    p = params(row("baseline"))  # van_proxy's stage 3 has two blocks of the same shapes
    for name in ("mlp.fc1.weight", "attn.proj_1.weight", "attn.spatial_gating_unit.conv0.weight"):
        first, second = p[f"block3.0.{name}"], p[f"block3.1.{name}"]
        assert first.shape == second.shape and not torch.equal(first, second), name


def test_a_dense_conv_is_drawn_apart_from_the_depthwise_one_it_replaces():
    base, dense = params(row("baseline")), params(row("dense_conv"))
    name = "block1.0.attn.spatial_gating_unit.conv0.weight"
    assert base[name].shape[1] == 1 and dense[name].shape[1] == base[name].shape[0]
    assert not torch.equal(base[name].flatten()[:25], dense[name].flatten()[:25])


def test_keyed_init_keeps_vans_init_distribution():
    model = row("baseline", model="van_b0")  # VAN-B0's widths: large layers, tight estimates
    p = params(model)
    fc1 = p["block4.0.mlp.fc1.weight"]  # 1x1 conv 256 -> 1024: normal(0, sqrt(2 / fan_out))
    assert fc1.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.01)
    assert abs(fc1.mean().item()) < 1e-3
    dw = p["block4.0.attn.spatial_gating_unit.conv0.weight"]  # 5x5 depth-wise: fan_out 25
    assert dw.std().item() == pytest.approx(math.sqrt(2 / 25), rel=0.05)
    head = p["head.weight"]  # Linear: trunc_normal(std=0.02)
    assert head.std().item() == pytest.approx(0.02, rel=0.03)
    assert head.abs().max().item() <= 2.0  # timm's trunc_normal_ bounds
    assert not p["block4.0.mlp.fc1.bias"].any() and not p["head.bias"].any()
    assert torch.equal(p["norm4.weight"], torch.ones(256))
    assert torch.equal(p["block1.0.norm1.weight"], torch.ones(32))
    assert torch.equal(p["block1.0.layer_scale_1"], torch.full((32,), 1e-2))


def test_keyed_init_leaves_the_global_rng_as_it_was():
    model = timm.create_model("van_proxy")
    torch.manual_seed(7)
    before = torch.get_rng_state()
    init_keyed(model, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
