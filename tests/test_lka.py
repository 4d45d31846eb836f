"""LKA as a spec: auto dilation (Eq. 3), validation, every switch, and its receptive field."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from van_ablate.model.lka import LKA, LKASpec, auto_dilation, eq3_cost

BRANCHES = [b for b in itertools.product([True, False], repeat=3) if any(b)]


def test_auto_dilation_reproduces_the_kernel_size_table():
    assert [auto_dilation(k) for k in (7, 14, 21, 28)] == [2, 3, 3, 4]
    assert LKASpec().resolved_dilation == 3


@pytest.mark.parametrize("kernel_size", range(1, 40))
def test_auto_dilation_is_the_smallest_minimiser_of_eq3(kernel_size):
    costs = {d: eq3_cost(kernel_size, d) for d in range(1, kernel_size + 1)}
    best = min(costs.values())
    assert auto_dilation(kernel_size) == min(d for d, c in costs.items() if c == best)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (dict(kernel_size=0), "kernel_size"),
        (dict(kernel_size=2.5), "kernel_size"),
        (dict(dilation=0), "dilation"),
        (dict(dilation="big"), "dilation"),
        (dict(gate="softmax"), "gate"),
        (dict(combine="concat"), "combine"),
        (dict(dw_conv="yes"), "dw_conv"),
        (dict(dw_conv=False, dwd_conv=False, pw_conv=False), "dw_conv"),
        (dict(dense=True, dwd_conv=False), "dense"),
    ],
)
def test_a_spec_that_makes_no_sense_is_refused_naming_the_field(fields, field):
    with pytest.raises(ValueError, match=rf"^lka\.{field}=.*: "):
        LKASpec(**fields)


def test_unknown_field_in_a_mapping_is_refused_with_the_allowed_fields():
    expected = r"lka\.kernal_size=7: unknown field; allowed: kernel_size"
    with pytest.raises(ValueError, match=expected):
        LKASpec.from_any({"kernal_size": 7})


def _specs():
    for k, d in [(3, 1), (4, 1), (7, "auto"), (8, 3), (14, "auto"), (21, 3), (21, 2), (28, 4)]:
        for dw, dwd, pw in BRANCHES:
            for gate, combine in itertools.product(["none", "sigmoid"], ["mul", "add", "none"]):
                yield LKASpec(k, d, dw, dwd, pw, gate, combine)
        yield LKASpec(k, d, dense=True)


def _expected_params(spec: LKASpec, c: int) -> int:
    if spec.dense:
        return c * c * spec.kernel_size**2 + c
    n = 0
    if spec.dw_conv:
        n += c * spec.dw_kernel**2 + c
    if spec.dwd_conv:
        n += c * spec.dwd_kernel**2 + c
    if spec.pw_conv:
        n += c * c + c
    return n


@pytest.mark.parametrize("spec", list(_specs()), ids=str)
def test_every_switch_combination_keeps_the_input_size_and_trains(spec):
    from van_ablate.model.complexity import lka_params

    c = 4
    module = LKA(c, spec)
    switches = dict(
        dw_conv=spec.dw_conv, dwd_conv=spec.dwd_conv, pw_conv=spec.pw_conv, dense=spec.dense
    )
    n_params = sum(p.numel() for p in module.parameters())
    assert n_params == _expected_params(spec, c)
    assert n_params == lka_params(
        c, spec.kernel_size, spec.resolved_dilation, **switches, bias=True
    )
    for h, w in [(9, 9), (10, 7)]:
        x = torch.randn(2, c, h, w, requires_grad=True)
        y = module(x)
        assert y.shape == x.shape
        y.square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert all(p.grad is not None for p in module.parameters())


def _gradient_support(spec: LKASpec, size: int = 61) -> torch.Tensor:
    """Input pixels (summed over channels) whose change moves the centre output pixel."""
    torch.manual_seed(0)
    module = LKA(3, spec).double()
    x = torch.randn(1, 3, size, size, dtype=torch.double, requires_grad=True)
    module(x)[0, :, size // 2, size // 2].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def _box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


@pytest.mark.parametrize(("k", "d"), [(7, 2), (14, 3), (21, 3), (28, 4), (21, 1), (8, 3), (12, 4)])
def test_receptive_field_is_what_the_spec_says(k, d):
    spec = LKASpec(k, d, combine="none")
    support = _gradient_support(spec)
    r0, r1, c0, c1 = _box(support)
    side = d * (math.ceil(k / d) + 1) - 1  # (2d-1) + d*(ceil(K/d)-1)
    assert spec.receptive_field == side
    assert (r1 - r0 + 1, c1 - c0 + 1) == (side, side)
    assert support[r0 : r1 + 1, c0 : c1 + 1].all()  # DW-Conv fills the dilation holes


@pytest.mark.parametrize(("k", "d"), [(21, 3), (28, 4), (8, 3)])
def test_without_dw_conv_the_dilated_conv_sees_a_sparse_lattice(k, d):
    spec = LKASpec(k, d, dw_conv=False, combine="none")
    support = _gradient_support(spec)
    m = math.ceil(k / d)
    r0, r1, c0, c1 = _box(support)
    assert (r1 - r0 + 1) == spec.receptive_field == d * (m - 1) + 1
    assert int(support.sum()) == m * m


def test_without_dwd_conv_only_the_local_window_is_seen():
    spec = LKASpec(21, 3, dwd_conv=False, combine="none")
    r0, r1, _, _ = _box(_gradient_support(spec))
    assert r1 - r0 + 1 == spec.receptive_field == 5


def test_dense_conv_sees_exactly_k_by_k():
    for k in (7, 8):
        spec = LKASpec(k, dense=True, combine="none")
        support = _gradient_support(spec, size=31)
        assert int(support.sum()) == k * k == spec.receptive_field**2


def test_gate_and_combine_change_the_output_as_the_paper_describes():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    base = LKA(4, LKASpec(combine="none"))
    attn = base(x)
    for spec, expected in [
        (LKASpec(), x * attn),
        (LKASpec(combine="add"), x + attn),
        (LKASpec(gate="sigmoid"), x * attn.sigmoid()),
        (LKASpec(gate="sigmoid", combine="none"), attn.sigmoid()),
    ]:
        module = LKA(4, spec)
        module.load_state_dict(base.state_dict())
        torch.testing.assert_close(module(x), expected)
