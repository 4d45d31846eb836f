"""Shared fixtures: tiny real inputs (image folders, run commands), never mocks of our code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# CI=true: a skip fails (tests/ci_skips.py).
pytest_plugins = ["ci_skips"]

# Tiny, fast, deterministic and offline settings for end-to-end runs of `python -m van_ablate`.
TINY_RUN = [
    "logger=none",
    "data.img_size=32",
    "data.num_workers=0",
    "train.batch_size=8",
    "train.eval_batch_size=32",
    "train.epochs=1",
    "train.warmup_epochs=0",
]


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # The machine is shared; one thread per process keeps tests from oversubscribing it.
    torch.set_num_threads(1)


def write_image_folder(root: Path, *, classes: int = 3, per_class: int = 8, size: int = 32) -> Path:
    """``root/{train,validation}/<class>/<n>.png``: each class a distinct colour plus noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("validation", max(per_class // 2, 2))):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.zeros(3)
            base[c % 3] = 200
            for i in range(n):
                pixels = base + rng.normal(0, 25, size=(size, size, 3))
                img = np.clip(pixels, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A 3-class ImageFolder with train (8 per class) and validation (4 per class) splits."""
    return write_image_folder(tmp_path / "images")


def run_env(**extra: str) -> dict[str, str]:
    """Environment for a child ``python -m van_ablate``: one thread, no W&B key, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


def run_app(
    args: list[str], cwd: Path, *, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m van_ablate ARGS`` in ``cwd`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "van_ablate", *args],
        cwd=cwd,
        env=env or run_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on a loopback port for the whole session (started on first use)."""
    from services import pg_bin, postgres_server

    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres, request) -> str:
    """A fresh, empty database on the session's server: ``postgresql://...``."""
    return postgres.new_database(request.node.name.lower()[:60].replace("[", "_").strip("]"))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A one-node SLURM cluster on this machine for the whole session (started on first use)."""
    from services import slurm_cluster, slurm_missing

    missing = slurm_missing()
    if missing:
        pytest.skip(missing)
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def slurm_without_accounting(tmp_path_factory):
    """A one-node SLURM cluster without slurmdbd (``sacct`` refuses), for one test module."""
    from services import slurm_cluster, slurm_missing

    missing = slurm_missing()
    if missing:
        pytest.skip(missing)
    with slurm_cluster(tmp_path_factory.mktemp("slurm_noacct"), accounting=False) as cluster:
        yield cluster


def offline_wandb_record(root: Path, needles: tuple[bytes, ...], timeout_s: float = 30.0) -> bytes:
    """The bytes of the one offline W&B record under ``root`` once they hold every needle.

    W&B's service process writes the record; on a loaded machine its last writes can land a
    moment after ``run.finish()`` returns, so wait for them (bounded) instead of reading early.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(Path(root).glob("**/offline-run-*/run-*.wandb"))
        data = records[0].read_bytes() if len(records) == 1 else b""
        if all(n in data for n in needles) or time.monotonic() > deadline:
            assert len(records) == 1, records
            return data
        time.sleep(0.2)


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of the app run in this process."""
    from van_ablate.__main__ import main  # registers Hydra's schema: only for tests that run it

    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err
