"""The READMEs' and the manual's shell commands run as printed after ``make test``'s set-up: every
tool that only exists inside ``.venv`` is called as ``.venv/bin/<tool>``, never bare."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO

# Installed into .venv by `make` (pyproject.toml); not on a fresh machine's PATH.
VENV_ONLY = {
    "python",
    "python3",
    "pip",
    "pytest",
    "torchrun",
    "optuna",
    "optuna-dashboard",
    "wandb",
    "ruff",
    "van-ablate",
    "mkdocs",
}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}


def shell_blocks(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of each fenced code block in a shell language."""
    blocks, lines = [], markdown.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if fence.group(1) in SHELL_LANGUAGES:
                blocks.append((i + 2, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def commands(block: str) -> list[str]:
    """The program each simple command of a shell block starts (after VAR=value prefixes)."""
    text = block.replace("\\\n", " ")
    programs = []
    for line in text.splitlines():
        line = line.strip().removeprefix("$ ")
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote in prose-like text: skip the line
            continue
        start = True
        for word in words:
            if word in ("&&", "||", ";", "|") or word.endswith(";"):
                start = True
                continue
            if start and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
                continue
            if start:
                programs.append(word)
            start = False
    return programs


def test_commands_are_found_in_shell_blocks():
    block = "FOO=1 python -m x && .venv/bin/pytest -q | tee log  # python comment\nmake run"
    assert commands(block) == ["python", ".venv/bin/pytest", "tee", "make"]


# The READMEs and every page of the manual (docs/, the mkdocs site).
READMES = (
    "README.md",
    "experiments/README.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
)
BLOCKS = [
    (f"{name}:{line}", block)
    for name in READMES
    for line, block in shell_blocks((REPO / name).read_text())
]


def test_the_readmes_and_the_manual_have_shell_blocks_to_check():
    assert len([b for b in BLOCKS if b[0].startswith("README.md:")]) >= 3
    assert len([b for b in BLOCKS if b[0].startswith("docs/")]) >= 15


@pytest.mark.parametrize("where,block", BLOCKS)
def test_readme_commands_call_venv_tools_by_their_venv_path(where, block):
    bare = [p for p in commands(block) if p in VENV_ONLY]
    assert not bare, f"{where}: call {bare} as .venv/bin/<tool>"
