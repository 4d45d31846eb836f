"""CI runs every test: under CI=true a skip (a missing service or package) fails the run."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

SKIPPING = """
import pytest

def test_needs_a_service():
    pytest.skip("PostgreSQL is not installed")

@pytest.mark.xfail(reason="a known inconsistency", strict=True)
def test_known():
    assert False
"""


def run_pytest(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(REPO / "tests")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "ci_skips", "-p", "no:cacheprovider"]
    args += ["--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py")]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_a_skip_fails_under_ci(tmp_path):
    proc = run_pytest(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    assert "1 failed, 1 xfailed" in proc.stdout
    assert "skipped under CI=true" in proc.stdout and "PostgreSQL is not installed" in proc.stdout


def test_a_skip_stays_a_skip_outside_ci(tmp_path):
    proc = run_pytest(tmp_path, None)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped, 1 xfailed" in proc.stdout
