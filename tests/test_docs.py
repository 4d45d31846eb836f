"""The manual (``docs/``, ``mkdocs.yml``) builds strictly, a broken link or anchor fails that
build, and the READMEs' links into the repository and the manual point at what exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from markdown.extensions.toc import slugify


def build(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config_dir/mkdocs.yml`` into ``site``."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=config_dir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner about its successor
    )


def test_the_manual_builds_strictly(tmp_path):
    result = build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "example_report" / "all.html").is_file()


@pytest.mark.parametrize(
    "link",
    ["[a page](no-such-page.md)", "[a heading](data.md#no-such-heading)"],
    ids=["page", "anchor"],
)
def test_a_broken_link_fails_the_strict_build(tmp_path, link):
    shutil.copy(REPO / "mkdocs.yml", tmp_path)
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "model.md"
    page.write_text(page.read_text() + f"\nSee {link}.\n")
    result = build(tmp_path, tmp_path / "site")
    assert result.returncode != 0
    assert "model.md" in result.stderr and link.split("(")[1].rstrip(")") in result.stderr


def headings(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as the manual's toc and GitHub write them."""
    return {
        slugify(re.sub(r"[`*]", "", m.group(1)), "-")
        for m in re.finditer(r"^#{1,6} (.+)$", re.sub(r"(?ms)^```.*?^```", "", markdown), re.M)
    }


def relative_links(markdown: str) -> list[str]:
    return [
        t
        for t in re.findall(r"\]\(([^)\s]+)\)", markdown)
        if not re.match(r"^[a-z]+://|^mailto:", t)
    ]


@pytest.mark.parametrize("name", ["README.md", "experiments/README.md"])
def test_the_readmes_links_point_at_files_and_headings_that_exist(name):
    source = REPO / name
    links = relative_links(source.read_text())
    assert links
    for link in links:
        path, _, anchor = link.partition("#")
        target = (source.parent / path).resolve() if path else source
        assert target.exists(), f"{name}: {link}: no such file"
        if anchor:
            assert anchor in headings(target.read_text()), f"{name}: {link}: no such heading"
