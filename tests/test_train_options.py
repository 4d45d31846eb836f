"""The ``train.*`` switches the README and docs/training.md list, each doing what it says: EMA,
torch.compile, gradient clipping, bf16, and no weight decay on norms, biases and LayerScale."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN, read_results, run_main
from hydra import compose, initialize_config_module
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

import van_ablate.__main__  # noqa: F401  (registers the schema and the run-name resolver)
from van_ablate.config import CONF_PACKAGE, validate
from van_ablate.data.loaders import DataConfig, build_loaders
from van_ablate.model.spec import ModelSpec
from van_ablate.model.van import VAN
from van_ablate.runs import load_run_model
from van_ablate.train import checkpoint
from van_ablate.train.recipe import build_recipe


def folder_run(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*TINY_RUN, "data=imagefolder", f"data.root={root}", f"hydra.run.dir={run_dir}", *extra]


def val_loss(model: nn.Module, results: dict) -> float:
    """Mean cross entropy of ``model`` on the run's validation split, computed here."""
    data = DataConfig(**results["config"]["data"])
    _, val, _ = build_loaders(data, batch_size=8, eval_batch_size=32, seed=0)
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in val:
            total += F.cross_entropy(model(x), y, reduction="sum").item()
            n += len(y)
    return total / n


def test_ema_keeps_averaged_weights_and_records_their_validation(image_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = folder_run(image_folder, run_dir, "train.ema=true", "train.ema_decay=0.5")
    code, err = run_main(args, capsys)
    assert code == 0, err
    r = read_results(run_dir)
    [epoch] = r["epochs"]
    assert {"ema_val_top1", "ema_val_top5", "ema_val_loss"} <= set(epoch)
    ckpt = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert ckpt["ema"] is not None and ckpt["ema"].keys() == ckpt["model"].keys()
    differs = [k for k, v in ckpt["ema"].items() if not torch.equal(v, ckpt["model"][k])]
    assert any(k.endswith("head.weight") for k in differs)  # an average, not the last weights
    model = load_run_model(run_dir, which="last")
    assert val_loss(model, r) == pytest.approx(epoch["val_loss"], rel=1e-4)
    model.load_state_dict(ckpt["ema"])
    assert val_loss(model, r) == pytest.approx(epoch["ema_val_loss"], rel=1e-4)
    assert epoch["ema_val_loss"] != pytest.approx(epoch["val_loss"], rel=1e-4)


def test_without_ema_nothing_of_it_is_kept(image_folder, tmp_path, capsys):
    code, err = run_main(folder_run(image_folder, tmp_path / "run"), capsys)
    assert code == 0, err
    [epoch] = read_results(tmp_path / "run")["epochs"]
    assert not [k for k in epoch if k.startswith("ema_")]
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["ema"] is None


def step_grad_norms(args: list[str], capsys) -> list[float]:
    """The total gradient norm the optimizer sees at each of its steps in a run of ``args``."""
    norms: list[float] = []

    def look(optimizer, *_):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    handle = register_optimizer_step_pre_hook(look)
    try:
        code, err = run_main(args, capsys)
    finally:
        handle.remove()
    assert code == 0, err
    return norms


def test_clip_grad_bounds_the_gradient_norm_of_every_step(image_folder, tmp_path, capsys):
    free = step_grad_norms(folder_run(image_folder, tmp_path / "free"), capsys)
    clip = 0.05
    clipped = step_grad_norms(
        folder_run(image_folder, tmp_path / "clipped", f"train.clip_grad={clip}"), capsys
    )
    assert len(free) == len(clipped) == 3  # 24 images, batch 8
    assert min(free) > 2 * clip  # without it the norm is well above the bound
    assert all(n <= clip * (1 + 1e-4) for n in clipped)
    assert max(clipped) == pytest.approx(clip, rel=1e-4)  # scaled to the bound, not zeroed
    config = read_results(tmp_path / "clipped")["config"]["train"]
    assert config["clip_grad"] == clip


def test_bf16_trains_and_evaluates_under_autocast_on_the_cpu(image_folder, tmp_path, capsys):
    calls: list[tuple[int, bool, torch.dtype]] = []  # (model, training, logits dtype)

    def look(module, inputs, output):
        if isinstance(module, VAN):
            calls.append((id(module), module.training, output.dtype))

    handle = register_module_forward_hook(look)
    try:
        code, err = run_main(folder_run(image_folder, tmp_path, "train.precision=bf16"), capsys)
    finally:
        handle.remove()
    assert code == 0, err
    [trained] = {m for m, training, _ in calls if training}  # not the copy counted for MACs
    dtypes = {(training, dtype) for m, training, dtype in calls if m == trained}
    assert dtypes == {(True, torch.bfloat16), (False, torch.bfloat16)}  # training, evaluation
    r = read_results(tmp_path)
    assert r["status"] == "completed" and r["config"]["train"]["precision"] == "bf16"
    assert all(math.isfinite(r["epochs"][0][k]) for k in ("train_loss", "val_loss"))


def test_weight_decay_skips_norms_biases_and_layer_scale():
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = validate(compose("config", overrides=["train=paper"]), [])
    model = ModelSpec.from_config(cfg.model, cfg.lka, num_classes=10, img_size=64).build()
    recipe = build_recipe(
        model, cfg.train, lr=1e-3, num_classes=10, batches_per_epoch=4, accum_steps=1
    )
    decay = {id(p): g["weight_decay"] for g in recipe.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert decay.keys() == {id(p) for p in named.values()}  # every parameter once
    no_decay = {n for n, p in named.items() if decay[id(p)] == 0.0}
    # The paper's recipe (timm's): no decay on norms, biases and LayerScale, the 1-D parameters.
    assert no_decay == {n for n, p in named.items() if p.ndim == 1}
    assert {"block1.0.layer_scale_1", "block1.0.norm1.weight", "norm4.bias", "head.bias"} <= (
        no_decay
    )
    decayed = {decay[id(p)] for n, p in named.items() if n not in no_decay}
    assert decayed == {cfg.train.weight_decay} == {0.05}
    assert "block1.0.attn.spatial_gating_unit.conv0.weight" not in no_decay


def test_compile_is_accepted_and_wraps_the_model_it_trains(image_folder, tmp_path):
    from torch._dynamo.eval_frame import OptimizedModule

    from van_ablate.train.distributed import DistEnv
    from van_ablate.train.loop import Trainer

    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        overrides = [o for o in folder_run(image_folder, tmp_path) if not o.startswith("hydra.")]
        cfg = validate(compose("config", overrides=[*overrides, "train.compile=true"]), [])
    assert cfg.train.compile is True
    model = ModelSpec.from_config(cfg.model, cfg.lka, num_classes=3, img_size=32).build()
    recipe = build_recipe(
        model, cfg.train, lr=1e-3, num_classes=3, batches_per_epoch=3, accum_steps=1
    )
    trainer = Trainer(
        cfg.train,
        model,
        recipe,
        (None, None),
        num_classes=3,
        device=torch.device("cpu"),
        dist=DistEnv(),
        accum_steps=1,
    )
    assert isinstance(trainer.net, OptimizedModule)


@pytest.mark.slow  # torch.compile of van_proxy: over a minute on the shared 2-core machine
def test_a_compiled_run_trains_through_compiled_graphs_to_the_eager_metrics(
    image_folder, tmp_path, capsys
):
    from torch._dynamo.utils import counters

    args = folder_run(image_folder, tmp_path / "eager")
    code, err = run_main(args, capsys)
    assert code == 0, err
    counters.clear()
    args = folder_run(image_folder, tmp_path / "compiled")
    code, err = run_main([*args, "train.compile=true"], capsys)
    assert code == 0, err
    assert counters["stats"]["unique_graphs"] > 0  # dynamo compiled the model, not eager
    eager, compiled = read_results(tmp_path / "eager"), read_results(tmp_path / "compiled")
    assert compiled["config"]["train"]["compile"] is True
    for key in ("train_loss", "val_loss"):
        assert compiled["epochs"][0][key] == pytest.approx(eager["epochs"][0][key], rel=1e-3)
