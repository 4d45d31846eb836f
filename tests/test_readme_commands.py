"""The README's "What people do most" commands still work: each runs, cheaply, and exits 0.

The training app only composes what it would run: ``--cfg all`` in place of ``-m`` (Hydra
composes the config, the study, the sweeper and the launcher and prints them; nothing trains and
no job is submitted), so a renamed config group, study or key fails here. Every other command
runs as printed, in an empty folder, where the ``multirun/...`` folders it names exist but hold
no runs (a report over them still writes its tables).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from test_readme import shell_blocks

HEADING = "## What people do most"
APP = [".venv/bin/python", "-m", "van_ablate"]


def most_common_commands() -> list[str]:
    """The commands of the first shell block under the README's HEADING, one per entry."""
    section = (REPO / "README.md").read_text().split(HEADING, 1)[1]
    _, block = shell_blocks(section)[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


COMMANDS = most_common_commands()


def test_the_readme_has_a_command_for_each_of_the_five_things():
    modules = [shlex.split(c)[:3] for c in COMMANDS]
    assert APP in modules  # one variant, a ready study, a study on a cluster
    assert [".venv/bin/python", "-m", "van_ablate.complexity"] in modules
    assert [".venv/bin/python", "-m", "van_ablate.analysis.report"] in modules  # a report
    assert any(c.startswith(".venv/bin/python -c ") for c in COMMANDS)  # a backbone
    assert len(COMMANDS) == 6


def cheap(words: list[str]) -> list[str]:
    """The command as run here: the app composes instead of running; the venv is this one."""
    if words[:3] == APP:
        words = APP + [w for w in words[3:] if w not in ("-m", "--multirun")] + ["--cfg", "all"]
    tool = words[0].removeprefix(".venv/bin/")
    return [str(Path(sys.executable).with_name(tool)), *words[1:]]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_the_readme_command_runs(command, tmp_path):
    words = shlex.split(command)
    for word in words:
        if word.startswith("multirun/"):
            (tmp_path / word).mkdir(parents=True)
    result = subprocess.run(
        cheap(words),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
