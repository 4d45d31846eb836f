"""ModelSpec: one description of the network from config to results.json and back."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from van_ablate.errors import ConfigError
from van_ablate.model.lka import LKASpec
from van_ablate.model.spec import ModelConfig, ModelSpec
from van_ablate.model.van import ARCHS

TINY = dict(num_classes=10, img_size=32)


def test_unset_architecture_fields_take_the_registered_models():
    spec = ModelSpec("van_b2")
    arch = ARCHS["van_b2"]
    assert (spec.dims, spec.depths, spec.mlp_ratios) == (
        arch["dims"],
        arch["depths"],
        arch["mlp_ratios"],
    )
    assert spec.drop_path_rate == arch["drop_path_rate"] == 0.1
    assert spec.lka == LKASpec()


def test_to_dict_survives_json_and_from_dict_gives_the_same_spec():
    spec = ModelSpec("van_proxy", lka=LKASpec(kernel_size=7, gate="sigmoid"), dims=(8, 16, 32, 48))
    doc = json.loads(json.dumps(spec.to_dict()))
    assert doc["lka"]["resolved_dilation"] == 2 and doc["dims"] == [8, 16, 32, 48]
    assert ModelSpec.from_dict(doc) == spec


def test_from_dict_reads_the_model_args_of_older_checkpoints():
    old = {
        "model_name": "van_proxy",
        "lka": {"kernel_size": 14, "dilation": "auto", "gate": "none"},
        "layer_scale": False,
        "drop_path_rate": 0.0,
        "num_classes": 4,
        "dims": None,
        "depths": None,
        "mlp_ratios": None,
    }
    spec = ModelSpec.from_dict(old)
    assert (spec.name, spec.lka.kernel_size, spec.layer_scale) == ("van_proxy", 14, False)
    assert spec.dims == ARCHS["van_proxy"]["dims"]


def test_from_config_reads_the_composed_model_group_and_lka():
    model = OmegaConf.merge(
        OmegaConf.structured(ModelConfig), {"name": "van_proxy", "depths": [1, 1, 1, 1]}
    )
    lka = OmegaConf.merge(OmegaConf.structured(LKASpec), {"kernel_size": 7})
    spec = ModelSpec.from_config(model, lka, **TINY)
    assert spec.depths == (1, 1, 1, 1) and spec.lka == LKASpec(kernel_size=7)
    assert spec.drop_path_rate == ARCHS["van_proxy"]["drop_path_rate"]
    assert ModelSpec.from_config(OmegaConf.to_object(model), lka, **TINY) == spec


def test_build_makes_the_model_the_spec_describes_and_cost_counts_it():
    spec = ModelSpec("van_proxy", lka=LKASpec(dw_conv=False), layer_scale=False, **TINY)
    model = spec.build()
    assert model.lka == spec.lka and model.num_classes == 10
    assert model.block1[0].layer_scale_1 is None
    assert model.block1[0].attn.spatial_gating_unit.conv0 is None
    cost = spec.cost()
    assert cost["params"] == cost["params_counted"] == sum(p.numel() for p in model.parameters())
    assert cost["flops_paper"] == cost["flops_paper_counted"] and cost["img_size"] == 32


def test_counting_leaves_the_callers_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ModelSpec("van_proxy", **TINY).counted_cost()
    assert torch.equal(torch.rand(3), expected)


def test_changed_arch_names_only_what_differs_from_the_registry():
    assert ModelSpec("van_b0").changed_arch() == {}
    assert ModelSpec("van_b0", depths=(2, 2, 2, 2)).changed_arch() == {"depths": [2, 2, 2, 2]}


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        (dict(name="resnet50"), "model"),
        (dict(dims=(8, 16)), "model.dims"),
        (dict(depths=(1, 0, 1, 1)), "model.depths"),
        (dict(drop_path_rate=1.0), "model.drop_path_rate"),
        (dict(layer_scale="yes"), "model.layer_scale"),
        (dict(img_size=0), "img_size"),
        (dict(num_classes=-1), "num_classes"),
        (dict(lka={"gate": "softmax"}), "lka.gate"),
    ],
)
def test_a_spec_that_makes_no_sense_is_refused_naming_the_key(fields, key):
    with pytest.raises(ConfigError) as err:
        ModelSpec(**{"name": "van_proxy", **fields})
    assert err.value.key == key


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match=r"^model\.width=3: unknown key; allowed: name, lka"):
        ModelSpec.from_dict({"name": "van_proxy", "width": 3})
