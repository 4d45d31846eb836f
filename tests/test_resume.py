"""A run killed mid-epoch and started again ends exactly like one never interrupted (CPU,
deterministic settings): real processes, a real SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_results, run_app, run_env, write_image_folder

from van_ablate import checkpoint

# Everything random on: mixup/cutmix, drop path, random crops and flips.
ARGS = [
    "logger=none",
    "data=imagefolder",
    "data.img_size=32",
    "data.num_workers=0",
    "data.hflip=0.5",
    "data.scale=[0.5,1.0]",
    "model.drop_path_rate=0.1",
    "train.epochs=3",
    "train.batch_size=8",
    "train.eval_batch_size=32",
    "train.mixup=0.8",
    "train.cutmix=1.0",
    "train.deterministic=true",
]


def start(root: Path, run_dir: Path) -> subprocess.Popen:
    args = [*ARGS, f"data.root={root}", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(
        [sys.executable, "-m", "van_ablate", *args],
        cwd=run_dir.parent,
        env=run_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow  # three processes: about 50 s on the shared 2-core machine
def test_killed_mid_epoch_and_rerun_ends_with_the_uninterrupted_metrics(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=32)  # 12 steps per epoch
    reference = start(root, tmp_path / "reference")
    victim = start(root, tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into epoch 2
    victim.kill()
    victim.wait()
    assert checkpoint.load(last)["epoch"] == 1, "the kill must land in epoch 2"

    args = [*ARGS, f"data.root={root}", f"hydra.run.dir={tmp_path / 'killed'}"]
    resumed = run_app(args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=240) == 0
    expected = read_results(tmp_path / "reference")
    got = read_results(tmp_path / "killed")
    assert got["status"] == "completed" and len(got["epochs"]) == 3
    timing = ("images_per_sec", "time_s")
    strip = [{k: v for k, v in e.items() if k not in timing} for e in got["epochs"]]
    assert strip == [{k: v for k, v in e.items() if k not in timing} for e in expected["epochs"]]
    assert (got["best"], got["final"]["val_loss"]) == (
        expected["best"],
        expected["final"]["val_loss"],
    )
    assert "resuming" in (tmp_path / "killed" / "train.log").read_text()
