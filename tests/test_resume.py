"""Resuming: a run killed or stopped mid-epoch and started again ends exactly like one never
interrupted (CPU, deterministic settings; real processes, real signals); damaged checkpoints and
results.json files are named, never a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_RUN, read_results, run_app, run_env, run_main, write_image_folder
from torch.nn.modules.module import register_module_forward_pre_hook

from van_ablate.__main__ import main
from van_ablate.errors import EXIT_CONFIG, Preempted
from van_ablate.model.van import VAN
from van_ablate.train import checkpoint
from van_ablate.train.preemption import StopSignals

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
# Runs that must be hit mid-epoch 2 get 48 steps an epoch (~2 s on an idle core), so that a
# signal sent a moment after epoch 1's checkpoint lands inside it on any machine load.
PER_CLASS_LONG, STEPS_LONG = 128, 48


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
    root = write_image_folder(tmp_path / "images", per_class=PER_CLASS_LONG)
    reference = start(root, tmp_path / "reference")
    victim = start(root, tmp_path / "killed")
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # into epoch 2's 48 steps
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


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared (exit code {proc.poll()})"


def same_metrics(got: dict, expected: dict) -> None:
    timing = ("images_per_sec", "time_s")
    strip = [{k: v for k, v in e.items() if k not in timing} for e in got["epochs"]]
    assert strip == [{k: v for k, v in e.items() if k not in timing} for e in expected["epochs"]]
    assert (got["best"], got["final"]["val_loss"]) == (
        expected["best"],
        expected["final"]["val_loss"],
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_a_stop_signal_writes_a_mid_epoch_checkpoint_at_once_and_exits_for_requeue(
    signum, tmp_path
):
    root = write_image_folder(tmp_path / "images", per_class=32)  # 12 steps per epoch
    run_dir = tmp_path / "run"
    proc = start(root, run_dir)
    wait_for(run_dir / "results.json", proc)  # set up: the next step is the first
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == 128 + signum
    ckpt = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 0 and 1 <= ckpt["batch"] < 12 and ckpt["step"] == ckpt["batch"]
    r = read_results(run_dir)
    assert r["status"] == "running" and f"signal {signum}" in r["reason"]
    log = (run_dir / "train.log").read_text()
    assert f"stop signal {signum} after {ckpt['batch']} batches of epoch 1" in log


@pytest.mark.slow  # three processes of three epochs: about a minute on the shared machine
def test_a_run_stopped_mid_epoch_resumes_from_that_step_with_the_uninterrupted_metrics(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=PER_CLASS_LONG)
    reference = start(root, tmp_path / "reference")
    victim = start(root, tmp_path / "stopped")
    ckpts = tmp_path / "stopped" / "checkpoints"
    wait_for(ckpts / "last.pt", victim)
    deadline = time.time() + 60
    while len(read_results(tmp_path / "stopped")["epochs"]) < 1 and time.time() < deadline:
        time.sleep(0.02)  # epoch 1 recorded (results.json is written after last.pt)
    time.sleep(0.2)  # into epoch 2's 48 steps
    victim.send_signal(signal.SIGTERM)
    assert victim.wait(timeout=120) == 128 + signal.SIGTERM
    stopped = checkpoint.load(ckpts / "last.pt")
    assert (stopped["epoch"], checkpoint.load(ckpts / "previous.pt")["epoch"]) == (1, 1)
    assert 0 < stopped["batch"] < STEPS_LONG, "the signal must land in epoch 2's training"

    args = [*ARGS, f"data.root={root}", f"hydra.run.dir={tmp_path / 'stopped'}"]
    resumed = run_app(args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=240) == 0
    got = read_results(tmp_path / "stopped")
    assert got["status"] == "completed" and len(got["epochs"]) == 3
    same_metrics(got, read_results(tmp_path / "reference"))
    log = (tmp_path / "stopped" / "train.log").read_text()
    assert f"after epoch 1 and {stopped['batch']} batches of epoch 2" in log


# What submitit does in a job: its SIGUSR2 handler requeues the job, then calls sys.exit(-1).
SUBMITIT_LIKE = """
import signal, sys
from van_ablate.__main__ import main
signal.signal(signal.SIGUSR2, lambda signum, frame: sys.exit(-1))
main(sys.argv[1:])
"""


def test_a_handler_that_ends_the_job_itself_gets_the_signal_after_the_checkpoint(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=32)
    run_dir = tmp_path / "run"
    args = [*ARGS, f"data.root={root}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBMITIT_LIKE, *args],
        cwd=tmp_path,
        env=run_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(run_dir / "results.json", proc)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=120) == 255  # its sys.exit(-1), not ours
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["batch"] >= 1
    r = read_results(run_dir)  # not marked failed: the job is requeued
    assert r["status"] == "running" and f"signal {signal.SIGUSR2}" in r["reason"]


def test_a_stop_signal_is_handed_to_the_handler_that_was_there_before():
    """submitit installs a SIGUSR2 handler that requeues the job: it still runs, after ours."""
    calls = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert stop.signum == signal.SIGUSR2 and calls == []  # only noted so far
            with pytest.raises(Preempted) as raised:
                stop.hand_over()
        assert calls == [signal.SIGUSR2] and raised.value.exit_code == 140
    finally:
        signal.signal(signal.SIGUSR2, before)


def signal_during_evaluation(args: list[str], signum: int, capsys) -> tuple[int, str]:
    """Run the app in this process and send it ``signum`` as it starts evaluating epoch 1."""
    trained: list[int] = []  # the model being trained (not the copy counted for MACs)
    sent: list[int] = []

    def look(module, inputs):
        if isinstance(module, VAN) and module.training and not trained:
            trained.append(id(module))
        elif not module.training and trained == [id(module)] and not sent:
            sent.append(signum)
            os.kill(os.getpid(), signum)

    handle = register_module_forward_pre_hook(look)
    try:
        return run_main(args, capsys)
    finally:
        handle.remove()


def test_a_stop_signal_during_evaluation_stops_after_that_epochs_checkpoint(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images")
    reference = tmp_path / "reference"
    code, err = run_main(two_epoch_args(root, reference), capsys)
    assert code == 0, err
    run_dir = tmp_path / "run"
    code, err = signal_during_evaluation(two_epoch_args(root, run_dir), signal.SIGTERM, capsys)
    assert code == 128 + signal.SIGTERM
    assert "stopped: stopped by SIGTERM after writing a checkpoint; run again to resume" in err
    ckpt = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 0)  # the whole epoch, evaluated
    r = read_results(run_dir)
    assert r["status"] == "running" and len(r["epochs"]) == 1
    assert (
        r["reason"] == f"stopped by signal {int(signal.SIGTERM)} after epoch 1; resumes from there"
    )
    assert "during the evaluation of epoch 1" in (run_dir / "train.log").read_text()

    code, err = run_main(two_epoch_args(root, run_dir), capsys)
    assert code == 0, err
    assert "resuming" in (run_dir / "train.log").read_text()
    got = read_results(run_dir)
    assert got["status"] == "completed" and len(got["epochs"]) == 2
    same_metrics(got, read_results(reference))


# --------------------------------------------------------------------------- damaged files


def two_epoch_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    args = [*TINY_RUN, "train.epochs=2", "data=imagefolder", f"data.root={root}"]
    return [*args, f"hydra.run.dir={run_dir}", *extra]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(image folder, run directory) of a finished 2-epoch run: last, previous and best.pt."""
    tmp = tmp_path_factory.mktemp("finished")
    root = write_image_folder(tmp / "images")
    try:
        main(two_epoch_args(root, tmp / "run"))
    except SystemExit as exit_:
        assert exit_.code == 0
    return root, tmp / "run"


DAMAGE = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: os.urandom(4096),
}


def damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGE[how](path.read_bytes()))


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one_with_a_warning(
    how, finished_run, tmp_path, capsys
):
    root, finished = finished_run
    run_dir = shutil.copytree(finished, tmp_path / "run")
    damage(run_dir / "checkpoints" / "last.pt", how)
    code, err = run_main(two_epoch_args(root, run_dir), capsys)
    assert code == 0, err
    warnings = [line for line in (run_dir / "train.log").read_text().splitlines() if "WARN" in line]
    [warning] = warnings
    assert str(run_dir / "checkpoints" / "last.pt") in warning
    assert str(run_dir / "checkpoints" / "previous.pt") in warning
    r = read_results(run_dir)
    assert r["status"] == "completed" and [e["epoch"] for e in r["epochs"]] == [1, 2]
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"] == 2


def test_with_no_readable_checkpoint_the_run_stops_naming_the_file_and_overwrites_nothing(
    finished_run, tmp_path, capsys
):
    root, finished = finished_run
    run_dir = shutil.copytree(finished, tmp_path / "run")
    for name, how in (("last.pt", "truncated"), ("previous.pt", "empty"), ("best.pt", "garbage")):
        damage(run_dir / "checkpoints" / name, how)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".log"}
    code, err = run_main(two_epoch_args(root, run_dir), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_CONFIG and len(lines) == 1, err
    assert str(run_dir / "checkpoints" / "last.pt") in lines[0] and "resume=never" in lines[0]
    assert {p: p.read_bytes() for p in before} == before
    assert not (run_dir / "superseded").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint", b""], ids=["text file", "empty file"])
def test_resume_from_a_file_that_is_not_a_checkpoint_is_one_line_and_exit_2(
    content, image_folder, tmp_path, capsys
):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(content)
    args = two_epoch_args(image_folder, tmp_path / "run", f"resume={bogus}")
    code, err = run_main(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_CONFIG and len(lines) == 1, err
    assert lines[0].startswith(f"error: resume='{bogus}'") and "auto or never" in lines[0]
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [('{"epochs": [', "is damaged"), ('{"accuracy": 0.9}', "is not a van-ablate results.json")],
    ids=["damaged", "foreign"],
)
def test_a_damaged_or_foreign_results_json_in_the_run_directory_is_named(
    content, words, image_folder, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(content)
    code, err = run_main(
        [*TINY_RUN, "data=imagefolder", f"data.root={image_folder}", f"hydra.run.dir={run_dir}"],
        capsys,
    )
    assert code == 0, err
    log = (run_dir / "train.log").read_text()
    [warning] = [line for line in log.splitlines() if "WARN" in line]
    assert f"{run_dir / 'results.json'} {words}" in warning
    assert read_results(run_dir)["status"] == "completed"
