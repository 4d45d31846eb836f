"""W&B (logger=wandb): offline at once without a key or a server, its files in the run directory."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import TINY_RUN, offline_wandb_record, read_results, run_main
from torch.nn.modules.module import register_module_forward_pre_hook
from wandb_records import finished_records, logged_epochs, run_record

from van_ablate.__main__ import main
from van_ablate.model.van import VAN
from van_ablate.wandb_logger import resolve_mode


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    """No WANDB_* variables and a HOME without ~/.netrc: W&B has no key."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()


def test_without_a_key_the_mode_is_offline_at_once(no_wandb_key):
    started = time.time()
    assert resolve_mode("auto") == "offline"
    assert time.time() - started < 1.0


def test_with_a_key_but_no_server_the_mode_is_offline(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    assert resolve_mode("auto") == "offline"


def test_wandb_mode_in_the_environment_wins(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    assert resolve_mode("online") == "disabled"


def test_a_run_without_a_key_keeps_an_offline_wandb_run_in_its_directory(
    no_wandb_key, image_folder, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    args = [a for a in TINY_RUN if not a.startswith("logger=")]
    args += ["logger=wandb", "logger.log_every_steps=1", "+ablation=sigmoid", "data=imagefolder"]
    args += [f"data.root={image_folder}", f"hydra.run.dir={run_dir}"]
    main(args)
    out = capsys.readouterr().out
    logged = (b"epoch/val_top1", b"train/loss", b"kernel_size", b"sigmoid", b"van_proxy")
    data = offline_wandb_record(run_dir / "wandb", logged)
    [offline] = (run_dir / "wandb").glob("offline-run-*")
    [record] = offline.glob("run-*.wandb")
    run_id = read_results(run_dir)["run_id"]
    assert record.name == f"run-{run_id}.wandb"
    for needle in logged:
        assert needle in data, needle
    run = run_record(data)
    assert (run.run_id, run.display_name) == (run_id, "run")
    assert run.run_group == "van_proxy/sigmoid"  # <model>/<ablations>
    assert list(run.tags) == ["van_proxy", "sigmoid"]
    assert f"wandb sync {offline}" in out


def test_a_resumed_run_continues_the_same_wandb_run(no_wandb_key, image_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [a for a in TINY_RUN if not a.startswith("logger=")] + ["train.epochs=2"]
    args += ["logger=wandb", "data=imagefolder", f"data.root={image_folder}"]
    args += [f"hydra.run.dir={run_dir}"]
    steps: list[int] = []

    def stop_in_epoch_2(module, inputs):  # 3 steps an epoch: the 4th is epoch 2's first
        if isinstance(module, VAN) and module.training:
            steps.append(1)
            if len(steps) == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    handle = register_module_forward_pre_hook(stop_in_epoch_2)
    try:
        code, err = run_main(args, capsys)
    finally:
        handle.remove()
    assert code == 128 + signal.SIGTERM, err
    time.sleep(1.1)  # W&B names a run's folder by its start second and id: keep the two apart
    code, err = run_main(args, capsys)
    assert code == 0, err
    run_id = read_results(run_dir)["run_id"]
    first, resumed = finished_records(run_dir / "wandb", 2).values()  # folders sort by time
    for records in (first, resumed):
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert run.run_id == run_id
    exits = [[r.exit.exit_code for r in rs if r.WhichOneof("record_type") == "exit"]
             for rs in (first, resumed)]  # fmt: skip
    assert exits == [[128 + signal.SIGTERM], [0]]
    assert [logged_epochs(rs) for rs in (first, resumed)] == [[1], [2]]  # epoch 2 goes on
