"""End to end: one short training job in-process, and what its run directory holds."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import TINY_RUN, read_results
from hydra import compose, initialize_config_module
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from torch.nn.modules.module import register_module_forward_pre_hook

from van_ablate import results
from van_ablate.__main__ import main, train_job
from van_ablate.config import CONF_PACKAGE
from van_ablate.data.loaders import DataConfig, build_loaders
from van_ablate.errors import EXIT_DIVERGED, Diverged
from van_ablate.model.van import VAN
from van_ablate.results import OBJECTIVE_FIELDS
from van_ablate.runs import load_run_model
from van_ablate.sweep.coordinator import SWEEP
from van_ablate.train import checkpoint

EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "val_top1", "val_top5", "lr"}
EPOCH_KEYS |= {"images_per_sec", "time_s"}
# Drives AdamW's decoupled weight decay (w -= lr * wd * w) far past float range in epoch 2:
# epoch 1 trains at the warmup lr, epoch 2 at 1e30.
EXPLODING_LR = [
    "train.epochs=3",
    "train.lr=1e30",
    "train.lr_base_batch=8",
    "train.warmup_epochs=1",
    "train.warmup_lr=1e-4",
    "train.sched_on_updates=false",
]


def folder_run(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*TINY_RUN, "data=imagefolder", f"data.root={root}", f"hydra.run.dir={run_dir}", *extra]


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_one_epoch_on_an_image_folder_writes_the_whole_run_directory(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    assert run(folder_run(image_folder, run_dir, "+ablation=k7")) == 0
    r = read_results(run_dir)
    assert r["schema_version"] == 3 and r["status"] == "completed" and r["reason"] is None
    assert (r["model"], r["ablations"], r["layer_scale"]) == ("van_proxy", ["k7"], True)
    assert r["lka"]["kernel_size"] == 7 and r["lka"]["resolved_dilation"] == 2
    data = r["data"]
    assert (data["name"], data["num_classes"], data["img_size"]) == ("imagefolder", 3, 32)
    assert (data["num_train"], data["num_val"], data["skipped"]) == (24, 12, 0)
    assert r["complexity"]["params"] == r["complexity"]["params_counted"] > 0
    assert r["complexity"]["macs"] == r["complexity"]["macs_counted"] > 0
    [epoch] = r["epochs"]
    assert set(epoch) == EPOCH_KEYS and epoch["epoch"] == 1
    assert all(math.isfinite(epoch[k]) for k in EPOCH_KEYS)
    assert r["best"] == {k: epoch[k] for k in ("epoch", "val_top1", "val_top5")}
    assert r["final"]["val_top1"] == epoch["val_top1"]
    assert r["objective"] == {"names": ["best.val_top1"], "values": [epoch["val_top1"]]}
    assert r["diverged"] is None and r["trial"] is None and r["wall_time_s"] > 0
    assert r["versions"]["torch"] == torch.__version__.split("+")[0]
    assert "git_commit" in r and r["config"]["lka"]["kernel_size"] == 7
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == r["config"]
    assert "epoch 1/1" in (run_dir / "train.log").read_text()
    ckpt = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["config"]) == (1, r["config"])
    assert {"model", "optimizer", "scheduler", "ema", "step", "rng"} <= set(ckpt)
    assert r["setup"]["total_epochs"] == 1 and "epochs" not in r["setup"]


def test_a_schema_1_results_json_reads_with_its_keys_renamed(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    assert run(folder_run(image_folder, run_dir, "train.cooldown_epochs=1")) == 0
    current = read_results(run_dir)
    old = copy.deepcopy(current)
    old["schema_version"] = 1
    old["presets"] = old.pop("ablations")
    old["setup"]["epochs"] = old["setup"].pop("total_epochs")
    assert old["setup"]["epochs"] == 2  # train.epochs=1 plus the cooldown
    assert results.readable(old) and results.upgrade(old) == current
    assert not results.readable({"schema_version": 99}) and not results.readable([])


def test_the_best_checkpoint_rebuilds_the_model_and_its_backbone(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    assert run(folder_run(image_folder, run_dir, "train.epochs=2")) == 0
    r = read_results(run_dir)
    model = load_run_model(run_dir, which="best")
    data = DataConfig(**r["config"]["data"])
    _, val, _ = build_loaders(data, batch_size=8, eval_batch_size=32, seed=0)
    with torch.no_grad():
        hits = sum((model(x).argmax(1) == y).sum().item() for x, y in val)
    assert 100 * hits / r["data"]["num_val"] == pytest.approx(r["best"]["val_top1"])
    # The same weights as a detection/segmentation backbone: stage outputs through timm.
    x = next(iter(val))[0]
    for feature_cls in ("list", "getter"):
        backbone = load_run_model(
            run_dir, features_only=True, out_indices=(1, 2, 3), feature_cls=feature_cls
        )
        with torch.no_grad():
            want = model.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
            for got, ref in zip(backbone(x), want, strict=True):
                torch.testing.assert_close(got, ref)


def test_one_epoch_on_the_builtin_data(tmp_path):
    args = [*TINY_RUN, "data=builtin", "data.num_train=64", "data.num_val=32"]
    args += [f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert run(args) == 0
    r = read_results(tmp_path / "run")
    assert r["status"] == "completed" and r["data"]["name"] == "builtin"
    assert (r["data"]["num_train"], r["data"]["num_val"]) == (64, 32)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_one_epoch_on_fashion_mnist(tmp_path):
    args = [*TINY_RUN, "data=fashion_mnist", "data.num_train=40", "data.num_val=20"]
    args += ["model=van_proxy", f"hydra.run.dir={tmp_path / 'run'}"]
    assert run(args) == 0
    r = read_results(tmp_path / "run")
    assert r["status"] == "completed" and len(r["epochs"]) == 1
    data = r["data"]
    assert (data["name"], data["num_classes"], data["img_size"]) == ("fashion_mnist", 10, 32)
    assert (data["num_train"], data["num_val"]) == (40, 20)


def first_training_step(args: list[str]) -> dict:
    """What the model of a ``python -m van_ablate ARGS`` job sees at its first training forward:
    the batch, the global RNG states and the weights."""
    seen: dict = {}

    def look(module, inputs):
        if isinstance(module, VAN) and module.training and not seen:
            seen["x"] = inputs[0].detach().clone()
            seen["rng"] = (torch.get_rng_state(), np.random.get_state()[1], random.getstate())
            seen["params"] = {n: p.detach().clone() for n, p in module.named_parameters()}

    handle = register_module_forward_pre_hook(look)
    try:
        assert run(args) == 0
    finally:
        handle.remove()
    return seen


def test_two_rows_with_one_seed_start_from_the_same_batch_rng_and_shared_weights(tmp_path):
    # Random crops, flips, erasing, mixup/cutmix (numpy's RNG) and drop path (torch's RNG).
    args = [*TINY_RUN, "data=builtin", "data.num_train=16", "data.num_val=8", "seed=3"]
    args += ["data.hflip=0.5", "data.scale=[0.5,1.0]", "data.re_prob=0.5", "train.mixup=0.8"]
    args += ["train.cutmix=1.0", "model.drop_path_rate=0.1", f"data.cache_dir={tmp_path / 'c'}"]
    base = first_training_step([*args, f"hydra.run.dir={tmp_path / 'a'}", "+ablation=baseline"])
    row = first_training_step([*args, f"hydra.run.dir={tmp_path / 'b'}", "+ablation=no_dw_conv"])
    assert torch.equal(base["x"], row["x"])
    assert torch.equal(base["rng"][0], row["rng"][0]) and (base["rng"][1] == row["rng"][1]).all()
    assert base["rng"][2] == row["rng"][2]
    shared = [n for n in base["params"] if n in row["params"]]
    assert len(shared) < len(base["params"])  # the row has no DW-Conv
    for name in shared:
        assert torch.equal(base["params"][name], row["params"][name]), name


def test_several_objectives_return_one_value_each(image_folder, tmp_path):
    overrides = folder_run(image_folder, tmp_path, "objective=[final.val_top1,complexity.macs]")
    overrides = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    values = train_job(cfg, tmp_path / "run", ablations=[])
    r = read_results(tmp_path / "run")
    assert values == [r["final"]["val_top1"], r["complexity"]["macs"]]
    assert set(r["objective"]["names"]) <= set(OBJECTIVE_FIELDS)


def test_gradient_accumulation_reaches_the_global_batch(image_folder, tmp_path):
    extra = ["train.global_batch=16", "train.lr=1e-3", "train.lr_base_batch=32"]
    assert run(folder_run(image_folder, tmp_path / "run", *extra)) == 0
    setup = read_results(tmp_path / "run")["setup"]
    # 24 images / batch 8 = 3 micro-batches: two updates (2 + the 1 left over).
    assert (setup["global_batch"], setup["accum_steps"], setup["updates_per_epoch"]) == (16, 2, 2)
    assert setup["lr"] == pytest.approx(5e-4)
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


def test_rerunning_a_finished_command_resumes_instead_of_training_again(image_folder, tmp_path):
    args = folder_run(image_folder, tmp_path / "run")
    assert run(args) == 0
    first = read_results(tmp_path / "run")
    assert run(args) == 0
    again = read_results(tmp_path / "run")
    assert again["epochs"] == first["epochs"] and again["run_id"] == first["run_id"]
    assert "resuming" in (tmp_path / "run" / "train.log").read_text()


def test_resume_never_moves_the_previous_run_aside(image_folder, tmp_path):
    args = folder_run(image_folder, tmp_path / "run")
    assert run(args) == 0
    first = read_results(tmp_path / "run")
    assert run([*args, "resume=never"]) == 0
    [old] = (tmp_path / "run" / "superseded").iterdir()
    assert read_results(old)["run_id"] == first["run_id"]
    assert read_results(tmp_path / "run")["run_id"] != first["run_id"]


def test_a_non_finite_loss_stops_the_run_as_diverged(image_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(folder_run(image_folder, run_dir, *EXPLODING_LR)) == EXIT_DIVERGED
    assert "error: loss became non-finite at epoch 2" in capsys.readouterr().err
    r = read_results(run_dir)
    assert r["status"] == "diverged" and "non-finite" in r["reason"]
    assert len(r["epochs"]) == 1
    d = r["diverged"]
    assert d["epoch"] == 2 and d["step"] > 3  # epoch 1 had 3 steps
    assert d["last_finite"]["step"] == d["step"] - 1
    assert math.isfinite(d["last_finite"]["train_loss"]) and d["last_finite"]["epoch"] == 1
    # The last good checkpoint (epoch 1) is kept; no non-finite weights were saved.
    ckpt = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_in_a_multirun_job_a_divergence_is_raised_for_the_sweeper(image_folder, tmp_path):
    overrides = [o for o in folder_run(image_folder, tmp_path, *EXPLODING_LR) if "hydra." not in o]
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with pytest.raises(Diverged):
        train_job(cfg, tmp_path / "run", ablations=[])
    assert read_results(tmp_path / "run")["status"] == "diverged"


def test_a_trial_pruned_by_optuna_stops_with_status_pruned(image_folder, tmp_path):
    journal = str(tmp_path / "journal.log")
    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    # The sweeper keeps its pruner in the study; this one stops any top-1 below 101 %.
    study_id = storage.get_study_id_from_name("s")
    storage.set_study_system_attr(
        study_id, SWEEP, {"pruner": {"name": "threshold", "lower": 101.0}}
    )
    study.ask()
    trial = ["trial.storage=" + journal, "trial.study_name=s", "trial.number=0"]
    assert run(folder_run(image_folder, tmp_path / "run", "train.epochs=3", *trial)) == 0
    r = read_results(tmp_path / "run")
    assert r["status"] == "pruned" and len(r["epochs"]) == 1
    assert r["trial"] == {"study_name": "s", "number": 0}
    assert r["objective"]["values"] == [r["epochs"][0]["val_top1"]]
    reported = study.trials[0].intermediate_values
    assert reported == {1: r["epochs"][0]["val_top1"]}
