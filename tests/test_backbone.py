"""VAN as a timm backbone: features_only with every feature class, forward_intermediates,
prune_intermediate_layers, TorchScript and fx, for every model and every LKA switch."""

import pytest
import timm
import torch
import yaml
from torchvision.ops import FeaturePyramidNetwork

import van_ablate  # noqa: F401  (registers the models)
from van_ablate.model.van import ARCHS

REDUCTIONS = [4, 8, 16, 32]
FEATURE_CLASSES = ["list", "dict", "hook", "getter", "fx"]
SMALL = ["van_b0", "van_b1", "van_b2", "van_proxy"]
LARGE = ["van_b3", "van_b4", "van_b5", "van_b6"]


def ablations(root):
    """Every switch of conf/ablation as (name, timm.create_model keyword arguments)."""
    for path in sorted((root / "conf" / "ablation").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        kwargs = {"lka": cfg.get("lka", {})}
        if "model" in cfg:
            kwargs["layer_scale"] = cfg["model"]["layer_scale"]
        yield path.stem, kwargs


def pytest_generate_tests(metafunc):
    if "switch" in metafunc.fixturenames:
        found = list(ablations(metafunc.config.rootpath))
        metafunc.parametrize("switch", [k for _, k in found], ids=[n for n, _ in found])


def stage_outputs(model, x):
    """Each stage's output, run stage by stage through the classifier model."""
    outs = []
    for i in range(4):
        x = model.stage(i, x)
        outs.append(x)
    return outs


def check_features(name, feats, x):
    dims = ARCHS[name]["dims"]
    side = x.shape[-1]
    assert [tuple(f.shape) for f in feats] == [
        (x.shape[0], d, side // r, side // r) for d, r in zip(dims, REDUCTIONS, strict=True)
    ]


@pytest.mark.parametrize("name", SMALL + [pytest.param(n, marks=pytest.mark.slow) for n in LARGE])
def test_every_model_is_a_four_stage_backbone(name):
    torch.manual_seed(0)
    model = timm.create_model(name, features_only=True).eval()
    assert model.feature_info.channels() == list(ARCHS[name]["dims"])
    assert model.feature_info.reduction() == REDUCTIONS
    assert model.feature_info.module_name() == ["norm1", "norm2", "norm3", "norm4"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        check_features(name, model(x), x)


@pytest.mark.parametrize("feature_cls", FEATURE_CLASSES)
def test_every_feature_class_returns_the_stage_outputs_after_the_stage_norm(feature_cls):
    torch.manual_seed(0)
    full = timm.create_model("van_proxy").eval()
    features = timm.create_model(
        "van_proxy",
        features_only=True,
        feature_cls=feature_cls,
        pretrained=True,
        pretrained_cfg_overlay=dict(state_dict=full.state_dict()),
    )
    features.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = features(x)
        expected = stage_outputs(full, x)
    feats = list(feats.values()) if isinstance(feats, dict) else feats
    assert len(feats) == 4
    for got, want in zip(feats, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_out_indices_choose_the_stages():
    model = timm.create_model("van_proxy", features_only=True, out_indices=(1, 3)).eval()
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [32, 96]


def test_forward_intermediates_follows_timm():
    torch.manual_seed(0)
    model = timm.create_model("van_proxy").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages = stage_outputs(model, x)
        final, every = model.forward_intermediates(x)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1], norm=True, intermediates_only=True)
        _, early = model.forward_intermediates(x, indices=[1], stop_early=True)
    torch.testing.assert_close(final, model.forward_features(x))
    for got, want in zip(every, stages, strict=True):
        torch.testing.assert_close(got, want)
    assert [t.shape[1] for t in last_two] == [64, 96]
    assert [t.shape[1] for t in picked] == [16, 96]
    torch.testing.assert_close(early[0], stages[1])
    with pytest.raises(AssertionError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


def test_prune_intermediate_layers_drops_later_stages_and_the_head():
    torch.manual_seed(0)
    model = timm.create_model("van_proxy").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert not any(k.startswith(("block3", "block4", "head")) for k in model.state_dict())
    assert model.num_features == 32
    with torch.no_grad():
        got = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert model(x).shape == (1, 32, 8, 8)  # no head, no pooling: timm's convention
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_pruning_only_the_head_keeps_every_stage():
    model = timm.create_model("van_proxy")
    model.prune_intermediate_layers(4, prune_head=True)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 96, 2, 2)


def test_every_switch_scripts_traces_and_gives_features(switch):
    torch.manual_seed(0)
    model = timm.create_model("van_proxy", **switch).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), want)
        traced = torch.jit.script(torch.fx.symbolic_trace(model))
        torch.testing.assert_close(traced(x), want)
        for cls in FEATURE_CLASSES:
            feats = timm.create_model("van_proxy", features_only=True, feature_cls=cls, **switch)
            out = feats.eval()(x)
            check_features("van_proxy", list(out.values()) if isinstance(out, dict) else out, x)
            if cls != "hook":  # timm's FeatureHookNet is not scriptable for any model
                out = torch.jit.script(feats)(x)
                check_features("van_proxy", list(out.values()) if cls == "dict" else out, x)


def test_an_lka_variant_feeds_a_feature_pyramid_and_a_segmentation_head():
    torch.manual_seed(0)
    backbone = timm.create_model(
        "van_proxy", features_only=True, lka={"kernel_size": 7, "gate": "sigmoid"}
    )
    fpn = FeaturePyramidNetwork(backbone.feature_info.channels(), out_channels=32)
    head = torch.nn.Conv2d(32, 5, 1)  # 5 classes, on the stride-4 level as SegNeXt/FPN heads
    x = torch.randn(2, 3, 64, 64)
    strides = backbone.feature_info.reduction()
    levels = fpn({str(r): f for r, f in zip(strides, backbone(x), strict=True)})
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        "4": (2, 32, 16, 16),
        "8": (2, 32, 8, 8),
        "16": (2, 32, 4, 4),
        "32": (2, 32, 2, 2),
    }
    logits = torch.nn.functional.interpolate(head(levels["4"]), size=x.shape[-2:])
    assert logits.shape == (2, 5, 64, 64)
    logits.logsumexp(1).mean().backward()
    assert backbone.norm1.weight.grad is not None
