"""The documentation site builds with no broken link, anchor or reference; the README stays short; every
results table says how it was made."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

DOCS = REPO / "docs"


def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: a page missing from the nav, a broken link or anchor, or an API reference
    to a name that no longer exists fails the build (and so this test)."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-4000:]
    cli = (site / "reference" / "cli" / "index.html").read_text("utf-8")
    for command in ("merkit data stats", "merkit train", "merkit predict", "merkit cache clear"):
        assert f"{command}<" in cli, f"{command} missing from the generated CLI reference"
    assert "--trust-pickle" in cli and "<!-- merkit-cli-reference -->" not in cli
    api = (site / "reference" / "api" / "index.html").read_text("utf-8")
    assert "merkit.loading.load" in api and ":class:" not in api


COMMAND = re.compile(r"^\s*(\$ )?(merkit |python |OMP_NUM_THREADS=\S+ python |for |flock )", re.M)
INLINE_COMMAND = re.compile(r"`(merkit |python )[^`]+`")


def sections(markdown: str) -> list[str]:
    """The page cut at its headings (a ``#`` line inside a fenced block is a shell comment, not a heading)."""
    parts, fenced = [[]], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            parts.append([])
        parts[-1].append(line)
    return ["\n".join(part) for part in parts]


def tables_without_a_command(markdown: str) -> list[str]:
    """The first row of each table whose section (heading to heading) names no command, script or recipe."""
    missing = []
    for section in sections(markdown):
        fenced = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", section, re.S))
        made = COMMAND.search(fenced) or INLINE_COMMAND.search(section) or "recipes/" in section
        if not made:
            missing += [line for line in section.splitlines() if line.startswith("|")][:1]
    return missing


def test_the_table_check_can_fail():
    assert tables_without_a_command("## A\n\n| a | b |\n|---|---|\n| 1 | 2 |\n") == ["| a | b |"]
    assert tables_without_a_command("## A\n\n| a |\n|---|\n\n```bash\nmerkit train x --out y\n```\n") == []
    # a shell comment inside the block is no heading: the table and its command stay in one section
    assert tables_without_a_command("## A\n\n| a |\n|---|\n\n```bash\n# first\nmerkit train x\n```\n") == []
    assert tables_without_a_command("## A\n\n| a |\n|---|\n\nMade by `recipes/a.yaml`.\n") == []


def test_every_results_table_names_its_command_or_recipe():
    pages = sorted((DOCS / "results").glob("*.md"))
    assert pages, "docs/results/ holds no page"
    for page in pages:
        missing = tables_without_a_command(page.read_text("utf-8"))
        assert not missing, f"{page.relative_to(REPO)}: a table with no command or recipe in its section: {missing}"
