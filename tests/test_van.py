"""VAN in timm: registration, the official state-dict layout and forward, local-file weights."""

from __future__ import annotations

import copy
import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml

import van_ablate  # noqa: F401  (registers the models)
from van_ablate.model.van import ARCHS, VAN

REFERENCE = "../shared/reference/van_paper.yaml"


@pytest.fixture(scope="module")
def reference(request):
    path = request.config.rootpath / REFERENCE
    if not path.exists():
        pytest.skip(f"{path} is not beside this checkout")
    return yaml.safe_load(path.read_text())


def test_all_variants_are_registered_with_timm():
    names = set(timm.list_models("van_*"))
    assert {f"van_b{i}" for i in range(7)} | {"van_proxy"} <= names


def test_defaults_keep_the_official_state_dict_keys(reference):
    arch = reference["models"]["van_b0"]
    expected = _official_keys(reference["architecture"]["state_dict_keys"], arch["depths"])
    assert set(timm.create_model("van_b0").state_dict()) == expected


def _official_keys(patterns: list[str], depths: list[int]) -> set[str]:
    """Expand the reference's key patterns ('block{i}.{j}.norm1.*', '{a,b}') for one model."""
    bn = "{weight,bias,running_mean,running_var,num_batches_tracked}"
    keys: set[str] = set()
    for line in patterns:
        for pattern in line.split(", "):
            pattern = pattern.replace("norm1.*", f"norm1.{bn}").replace("norm2.*", f"norm2.{bn}")
            pattern = pattern.replace(".*", ".{weight,bias}")
            for i, depth in enumerate(depths, 1):
                for j in range(depth):
                    keys |= _braces(pattern.replace("{i}", str(i)).replace("{j}", str(j)))
    return {k for k in keys if k.startswith("head") or re.search(r"\d", k)}


def _braces(pattern: str) -> set[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return {pattern}
    return set().union(
        *(_braces(pattern[: m.start()] + o + pattern[m.end() :]) for o in m.group(1).split(","))
    )


def _reference_forward(sd: dict[str, torch.Tensor], depths, x: torch.Tensor) -> torch.Tensor:
    """The official forward written out from the reference description, on a raw state dict."""

    def conv(prefix, x, stride=1, padding=0, dilation=1, groups=1):
        w = sd[f"{prefix}.weight"]
        return F.conv2d(x, w, sd[f"{prefix}.bias"], stride, padding, dilation, groups)

    def bn(prefix, x):
        return F.batch_norm(
            x,
            sd[f"{prefix}.running_mean"],
            sd[f"{prefix}.running_var"],
            sd[f"{prefix}.weight"],
            sd[f"{prefix}.bias"],
            eps=1e-5,
        )

    for i, depth in enumerate(depths, 1):
        x = conv(f"patch_embed{i}.proj", x, *((4, 3) if i == 1 else (2, 1)))
        x = bn(f"patch_embed{i}.norm", x)
        c = x.shape[1]
        for j in range(depth):
            p = f"block{i}.{j}"
            h = bn(f"{p}.norm1", x)
            u = F.gelu(conv(f"{p}.attn.proj_1", h))
            sgu = f"{p}.attn.spatial_gating_unit"
            a = conv(f"{sgu}.conv0", u, padding=2, groups=c)
            a = conv(f"{sgu}.conv_spatial", a, padding=9, dilation=3, groups=c)
            a = conv(f"{sgu}.conv1", a)
            h = conv(f"{p}.attn.proj_2", u * a) + h
            x = x + sd[f"{p}.layer_scale_1"][:, None, None] * h
            h = conv(f"{p}.mlp.fc1", bn(f"{p}.norm2", x))
            h = F.gelu(conv(f"{p}.mlp.dwconv.dwconv", h, padding=1, groups=h.shape[1]))
            x = x + sd[f"{p}.layer_scale_2"][:, None, None] * conv(f"{p}.mlp.fc2", h)
        b, c, hh, ww = x.shape
        t = F.layer_norm(
            x.flatten(2).transpose(1, 2), (c,), sd[f"norm{i}.weight"], sd[f"norm{i}.bias"], 1e-6
        )
        x = t.transpose(1, 2).reshape(b, c, hh, ww)
    return F.linear(x.mean(dim=(2, 3)), sd["head.weight"], sd["head.bias"])


def _official_checkpoint(model_name: str, generator: torch.Generator) -> dict:
    """A checkpoint in the official layout ({'state_dict': ...}) with random, non-trivial values."""
    sd = {}
    for k, v in timm.create_model(model_name).state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=generator) + 0.5
        else:
            sd[k] = torch.randn(v.shape, generator=generator) * 0.1
    return {"state_dict": sd, "epoch": 300}


def test_an_official_checkpoint_loads_strictly_and_gives_the_same_logits():
    g = torch.Generator().manual_seed(0)
    ckpt = _official_checkpoint("van_b0", g)
    model = timm.create_model("van_b0").eval()
    model.load_state_dict(ckpt["state_dict"], strict=True)
    x = torch.randn(2, 3, 96, 96, generator=g)
    with torch.no_grad():
        expected = _reference_forward(ckpt["state_dict"], ARCHS["van_b0"]["depths"], x)
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_pretrained_weights_come_from_a_local_file_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    g = torch.Generator().manual_seed(1)
    ckpt = _official_checkpoint("van_b0", g)
    path = tmp_path / "van_b0.pth.tar"
    torch.save(ckpt, path)
    overlay = dict(file=str(path))
    model = timm.create_model("van_b0", pretrained=True, pretrained_cfg_overlay=overlay)
    torch.testing.assert_close(model.head.weight, ckpt["state_dict"]["head.weight"])
    # A new head for another label set keeps the backbone and re-initialises the classifier.
    model10 = timm.create_model(
        "van_b0", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10
    )
    assert model10.head.out_features == 10
    torch.testing.assert_close(
        model10.patch_embed1.proj.weight, ckpt["state_dict"]["patch_embed1.proj.weight"]
    )


def test_without_a_file_pretrained_is_refused_instead_of_downloaded(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="pretrained"):
        timm.create_model("van_b0", pretrained=True)


def test_init_follows_the_official_rule():
    torch.manual_seed(0)
    model = timm.create_model("van_b2")
    w = model.block3[0].attn.spatial_gating_unit.conv_spatial.weight  # 7x7 depth-wise
    expected_std = math.sqrt(2.0 / (7 * 7 * 320 // 320))
    assert abs(w.std().item() - expected_std) / expected_std < 0.05
    assert model.block1[0].layer_scale_1.eq(1e-2).all()
    assert model.head.bias.eq(0).all() and abs(model.head.weight.std().item() - 0.02) < 0.002


def test_keyword_arguments_switch_the_model():
    model = timm.create_model(
        "van_b0",
        lka={"kernel_size": 7, "gate": "sigmoid"},
        layer_scale=False,
        drop_path_rate=0.2,
        num_classes=10,
        in_chans=1,
    )
    assert isinstance(model, VAN)
    lka = model.block1[0].attn.spatial_gating_unit
    assert (lka.spec.kernel_size, lka.spec.resolved_dilation, lka.sigmoid) == (7, 2, True)
    assert lka.conv0.kernel_size == (3, 3) and lka.conv_spatial.kernel_size == (4, 4)
    assert not any("layer_scale" in k for k in model.state_dict())
    assert model.block4[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_timm_model_interface():
    model = timm.create_model("van_proxy", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    model = timm.create_model("van_proxy").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_grad_checkpointing_recomputes_each_stage_and_gives_the_plain_gradients():
    torch.manual_seed(0)
    plain = timm.create_model("van_proxy", drop_path_rate=0.1).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 64, 64)
    forwards = []  # a pre-hook: recomputation may stop before a block's end
    for i in range(1, 5):
        block = getattr(checkpointed, f"block{i}")[0]
        block.register_forward_pre_hook(lambda m, args, i=i: forwards.append(i))
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same drop-path draws; checkpointing replays them on recompute
        loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
        loss.backward()
    assert sorted(forwards) == [1, 1, 2, 2, 3, 3, 4, 4]  # each stage ran again in backward
    grads = dict(plain.named_parameters())
    for name, p in checkpointed.named_parameters():
        assert p.grad is not None and grads[name].grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)
