"""The wheel: built from this checkout, installed into a fresh environment, run from elsewhere.

The fresh environment reuses this environment's installed packages (torch, timm, Hydra, ...)
through a ``.pth`` line instead of downloading them; that line adds the folder to ``sys.path``
without running its ``.pth`` files, so the editable install of the checkout stays out and only the
wheel's own copy of van_ablate can be imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN, run_env

# Top-level entries of the checkout that a build neither needs nor may pick up.
NOT_SOURCE = {".venv", ".git", "build", "dist", "runs", "multirun", "outputs", "sweeps", "reports"}
TINY_DATA = ["data.num_train=32", "data.num_val=16"]
# Source folders of the checkout and where pyproject.toml installs them.
PACKAGE_DIRS = {
    "van_ablate": "van_ablate",
    "hydra_plugins": "hydra_plugins",
    "analysis": "van_ablate/analysis",
    "conf": "van_ablate/conf",
    "experiments": "van_ablate/experiments",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=lambda folder, names: [
            n
            for n in names
            if (Path(folder) == REPO and n in NOT_SOURCE)
            or n == "__pycache__"
            or n.endswith(".egg-info")
        ],
    )
    # -v shows the build backend's output, where setuptools prints its deprecation warnings.
    build = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*build, "--no-index", "-w", str(root / "dist"), str(source)],
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Warning:" not in output, output  # e.g. SetuptoolsDeprecationWarning: ...
    (found,) = (root / "dist").glob("van_ablate-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh_python(wheel, tmp_path_factory) -> Path:
    """The interpreter of a new virtual environment holding the wheel."""
    env = tmp_path_factory.mktemp("env")
    venv.create(env, with_pip=False, symlinks=True)
    python = env / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    done = subprocess.run([*install, "--no-index", str(wheel)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Only after installing: pip must not see (and replace) the checkout's editable install.
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "reused_packages.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


@pytest.fixture
def outside(tmp_path) -> Path:
    """A working directory outside the checkout."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def run_installed(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(python), *args], cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_wheel_builds_without_warnings_and_holds_the_package_and_its_configs_only(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert packages == {"van_ablate", "hydra_plugins"}  # no tests, scripts or top-level analysis
    for folder in ("conf", "experiments"):
        yamls = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*.yaml")}
        assert yamls and {f"van_ablate/{y}" for y in yamls} <= names
    # Every module of the checkout, so a new sub-package missing from pyproject.toml fails here.
    for folder, package in PACKAGE_DIRS.items():
        modules = {p.relative_to(REPO / folder).as_posix() for p in (REPO / folder).rglob("*.py")}
        assert {f"{package}/{m}" for m in modules} <= names, folder
    (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
    assert b"License-Expression: MIT" in zipfile.ZipFile(wheel).read(metadata)


@pytest.mark.slow  # three fresh processes importing torch: about 60 s on a busy 2-core machine
def test_the_installed_app_runs_from_outside_the_checkout(fresh_python, outside, tmp_path):
    where = run_installed(
        fresh_python, ["-c", "import van_ablate.analysis.report as r; print(r.__file__)"], outside
    )
    assert Path(where.stdout.strip()).is_relative_to(fresh_python.parent.parent)

    config = run_installed(fresh_python.parent / "van-ablate", ["--cfg", "job"], outside)
    assert "name: van_proxy" in config.stdout

    cache = f"data.cache_dir={tmp_path / 'cache'}"
    run_installed(
        fresh_python,
        ["-m", "van_ablate", *TINY_RUN, *TINY_DATA, cache, "hydra.run.dir=run"],
        outside,
    )
    results = json.loads((outside / "run" / "results.json").read_text())
    assert results["status"] == "completed" and len(results["epochs"]) == 1
    assert results["git_commit"] is None  # installed code is not a checkout


@pytest.mark.slow  # about 30 s on a busy 2-core machine
def test_a_ready_study_runs_one_trial_from_the_installed_package(fresh_python, outside, tmp_path):
    study = ["+study=table3", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=1"]
    study += ["hydra.sweep.dir=sweep"]
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    run_installed(
        fresh_python, ["-m", "van_ablate", "-m", *study, *TINY_RUN, *TINY_DATA, cache], outside
    )
    results = json.loads((outside / "sweep" / "trial_0" / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["trial"] == {"study_name": "table3_van_proxy_builtin_v3", "number": 0}
    assert (outside / "sweep" / "optimization_results.yaml").is_file()
