"""torchrun: 2 CPU processes (gloo) train one run; metrics over both ranks, rank 0 writes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN, read_results, run_env

from van_ablate.data.loaders import DataConfig, build_loaders
from van_ablate.runs import load_run_model


def test_two_cpu_processes_train_one_run_and_only_rank_0_writes(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY_RUN, "train.epochs=2", "train.batch_size=4", "data=imagefolder"]
    args += [f"data.root={image_folder}", f"hydra.run.dir={run_dir}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    torchrun += ["--standalone", "-m", "van_ablate", *args]
    proc = subprocess.run(
        torchrun, cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = read_results(run_dir)
    assert r["status"] == "completed" and len(r["epochs"]) == 2
    setup = r["setup"]
    assert (setup["world_size"], setup["global_batch"], setup["device"]) == (2, 8, "cpu")
    # 24 train images over 2 ranks x 4 per step: 3 updates per epoch, all images seen.
    assert setup["updates_per_epoch"] == 3
    # Validation was summed over both ranks' halves: one process on all 12 images agrees.
    model = load_run_model(run_dir, which="last")
    _, val, _ = build_loaders(
        DataConfig(**r["config"]["data"]), batch_size=4, eval_batch_size=32, seed=0
    )
    with torch.no_grad():
        losses = [F.cross_entropy(model(x), y, reduction="sum") for x, y in val]
    assert sum(losses).item() / 12 == pytest.approx(r["final"]["val_loss"], rel=1e-4)
    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1
    assert proc.stdout.count("status") == 1  # one summary, from rank 0
