"""results.json's ``git_commit``: the checkout's commit, and null for code outside a checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from van_ablate.results import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


def git(repo: Path, *args: str) -> str:
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.com")
    done = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A repository with one committed source file and an ignored virtual environment."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "results.py").write_text("VERSION = 1\n")
    (repo / ".gitignore").write_text(".venv/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_a_clean_checkout_reports_its_head_commit(checkout):
    assert git_commit(checkout / "pkg" / "results.py") == git(checkout, "rev-parse", "HEAD")


def test_local_changes_mark_the_commit_dirty(checkout):
    (checkout / "pkg" / "results.py").write_text("VERSION = 2\n")
    head = git(checkout, "rev-parse", "HEAD")
    assert git_commit(checkout / "pkg" / "results.py") == f"{head}+dirty"


def test_an_installed_copy_inside_a_checkout_has_no_commit(checkout):
    installed = checkout / ".venv" / "lib" / "site-packages" / "pkg" / "results.py"
    installed.parent.mkdir(parents=True)
    installed.write_text("VERSION = 1\n")
    assert git_commit(installed) is None


def test_outside_any_checkout_there_is_no_commit(tmp_path):
    source = tmp_path / "site-packages" / "pkg" / "results.py"
    source.parent.mkdir(parents=True)
    source.write_text("VERSION = 1\n")
    assert git_commit(source) is None
