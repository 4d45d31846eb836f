"""The device policy: threads from the CPUs a job may use, OpenMP's wait policy, channels_last."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from conftest import TINY_RUN, read_results, run_app, run_env
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from van_ablate.__main__ import _jobs_side_by_side
from van_ablate.train.hardware import (
    available_cpus,
    busy_cpus,
    cgroup_cpu_quota,
    configure_threads,
    describe,
    intra_op_threads,
)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    "files,quota",
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_the_cgroup_cpu_quota_is_read_from_v2_or_v1_files(tmp_path, files, quota):
    assert cgroup_cpu_quota(_write(tmp_path, files)) == quota


def test_available_cpus_are_the_affinity_mask_capped_by_the_quota(tmp_path):
    mask = len(os.sched_getaffinity(0))
    assert available_cpus(_write(tmp_path / "none", {"cpu.max": "max 100000"})) == mask
    assert available_cpus(_write(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert available_cpus(_write(tmp_path / "big", {"cpu.max": "6400000 100000"})) == mask


def test_jobs_side_by_side_share_the_cpus_and_each_gets_at_least_one_thread():
    assert intra_op_threads(8) == 8
    assert intra_op_threads(8, parallel_jobs=2) == 4
    assert intra_op_threads(2, parallel_jobs=3) == 1


def test_omp_num_threads_wins_over_the_policy():
    before = torch.get_num_threads()
    try:
        assert configure_threads({"OMP_NUM_THREADS": "1"}, parallel_jobs=1) == 1
        assert torch.get_num_threads() == 1
        expected = max(1, available_cpus() // 2)
        assert configure_threads({}, parallel_jobs=2) == expected == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _hydra(mode: RunMode, launcher: dict, sweeper: dict):
    return OmegaConf.create({"mode": mode, "launcher": launcher, "sweeper": sweeper})


def test_a_multirun_counts_the_jobs_its_local_launcher_runs_at_once():
    joblib = OmegaConf.to_container(OmegaConf.structured(JobLibLauncherConf))
    assert _jobs_side_by_side(_hydra(RunMode.RUN, joblib, {"n_jobs": 4})) == 1
    assert _jobs_side_by_side(_hydra(RunMode.MULTIRUN, joblib | {"n_jobs": 2}, {"n_jobs": 4})) == 2
    assert _jobs_side_by_side(_hydra(RunMode.MULTIRUN, joblib, {"n_jobs": 3})) == 3  # n_jobs -1
    local = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
    assert _jobs_side_by_side(_hydra(RunMode.MULTIRUN, local, {"n_jobs": 2})) == 2
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    assert _jobs_side_by_side(_hydra(RunMode.MULTIRUN, slurm, {"n_jobs": 8})) == 1
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert _jobs_side_by_side(_hydra(RunMode.MULTIRUN, basic, {"n_jobs": 2})) == 1


def _spin_count_seen_by_openmp(env: dict[str, str]) -> str:
    """GNU OpenMP's spin count at barriers: '0' when passive, '300000' by default."""
    code = "import van_ablate, torch; torch.ones(64, 64) @ torch.ones(64, 64)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env | {"OMP_DISPLAY_ENV": "VERBOSE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "GOMP_SPINCOUNT" in ln]
    return lines[0].split("=")[1].strip().strip("'") if lines else "not shown"


def test_on_busy_cpus_importing_the_package_makes_openmp_wait_passively_unless_the_user_chose():
    env = {k: v for k, v in run_env().items() if k != "OMP_WAIT_POLICY"}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        assert _spin_count_seen_by_openmp(env) == "0"
        assert _spin_count_seen_by_openmp(env | {"OMP_WAIT_POLICY": "ACTIVE"}) != "0"
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_busy_cpus_counts_what_is_not_idle_or_waiting_for_io():
    # user, nice, system, idle, iowait jiffies: 60 busy, 100 idle, 40 iowait of 200 on 4 CPUs
    assert busy_cpus([0, 0, 0, 0, 0], [50, 0, 10, 100, 40], cpus=4) == pytest.approx(1.2)
    assert busy_cpus([5, 0, 5, 90, 0], [5, 0, 5, 90, 0], cpus=2) == 0.0  # no time passed


def test_channels_last_gives_the_same_training_step_as_the_default_layout():
    torch.manual_seed(0)
    model = timm.create_model("van_proxy", num_classes=10)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        m = model.to(memory_format=fmt)
        m.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x.contiguous(memory_format=fmt)), y)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in m.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = grads
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_describe_names_threads_wait_policy_and_layout():
    d = describe(channels_last=True)
    assert d["threads"] == torch.get_num_threads() and d["channels_last"] is True
    assert d["cpus_available"] == available_cpus()
    assert d["wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "default")


def test_the_cpu_preset_trains_in_channels_last_and_records_its_setup(tmp_path, image_folder):
    data = ["data=imagefolder", f"data.root={image_folder}"]
    proc = run_app([*TINY_RUN, *data, "train=cpu", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    setup = read_results(tmp_path / "run")["setup"]
    assert setup["channels_last"] is True
    assert setup["threads"] == 1  # OMP_NUM_THREADS=1 in the test environment wins
    assert setup["wait_policy"] in ("PASSIVE", "default") and setup["cpus_available"] >= 1


@pytest.mark.slow
def test_two_trials_side_by_side_get_the_cpus_shared_between_them(tmp_path, image_folder):
    sweep_dir = tmp_path / "sweep"
    env = {k: v for k, v in run_env().items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    args = [
        "-m",
        "hydra/sweeper=van_optuna",
        "hydra/launcher=joblib",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    args += [*TINY_RUN, "data=imagefolder", f"data.root={image_folder}"]
    args += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.launcher.n_jobs=2"]
    args += ["hydra.sweeper.study_name=threads", "hydra.sweeper.direction=maximize"]
    args += ["seed=choice(0,1)"]
    proc = run_app(args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    setups = [read_results(d)["setup"] for d in sorted(sweep_dir.glob("trial_*"))]
    assert len(setups) == 2
    assert [s["threads"] for s in setups] == [max(1, available_cpus() // 2)] * 2
