"""The documentation keeps up with the code: the site builds strictly (no page outside the nav, no broken link,
anchor or API reference); every command shown in the README and the docs parses; the README stays short and its
command map names every command; every model has its page; every results table says how it was made."""

from __future__ import annotations

import functools
import os
import re
import shlex
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


def test_every_page_is_in_the_nav_once():
    """The strict build fails on a page left out of the nav; a page listed twice shows twice (and builds)."""
    import yaml

    def pages(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(yaml.safe_load((REPO / "mkdocs.yml").read_text("utf-8"))["nav"]))
    assert sorted({page for page in listed if listed.count(page) > 1}) == []


def test_the_readme_is_short_and_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text("utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"
    opening = "\n".join(lines[:8])
    assert "make demo" in opening and "make test" in opening


def leaf_commands() -> list[str]:
    """Every command of the ``merkit`` app that does something (``data stats``, not ``data``)."""

    def walk(command, path, parent):
        ctx = command.context_class(command, info_name=path[-1] if path else "merkit", parent=parent)
        names = command.list_commands(ctx) if hasattr(command, "list_commands") else []
        if not names:
            yield " ".join(path)
        for name in names:
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, [*path, name], ctx)

    return list(walk(merkit_command(), [], None))


def test_the_readme_command_map_names_every_command():
    readme = (REPO / "README.md").read_text("utf-8")
    commands = leaf_commands()
    assert {"data stats", "train", "predict", "cache clear"} <= set(commands)
    missing = [name for name in commands if f"| `merkit {name}` |" not in readme]
    assert not missing, f"README.md's command map has no line for: {missing}"


def test_every_registered_model_has_its_registry_facts_on_a_model_page():
    """A model page shows ``<!-- merkit-model NAME -->``, which the build fills from the registry."""
    from merkit.models.registry import available_models

    pages = "\n".join(page.read_text("utf-8") for page in (DOCS / "models").glob("*.md"))
    missing = [name for name in available_models() if f"<!-- merkit-model {name} -->" not in pages]
    assert not missing, f"no page in docs/models/ shows the model(s) {missing}"


def shell_commands(markdown: str) -> list[str]:
    """The ``merkit ...`` commands of a page's shell blocks, with the block's own variables expanded."""
    found = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", markdown, re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        arrays = dict(re.findall(r"^\s*(\w+)=\((.*)\)\s*$", block, re.M))
        strings = dict(re.findall(r'\b(\w+)="([^"]*)"', block))
        for line in block.splitlines():
            line = re.sub(r'"?\$\{(\w+)\[@\]\}"?', lambda m: arrays.get(m.group(1), m.group(0)), line)
            line = re.sub(r"\$(\w+)\b", lambda m: strings.get(m.group(1), m.group(0)), line)
            line = re.sub(r"\[(--[^\]]+)\]", r"\1", line)  # [--preset P]: an optional part
            for part in re.split(r"\s*(?:&&|;)\s+|\s+\|\s+", line.strip()):
                part = re.sub(r"^(?:\$ |do |then |time |\w+=\S+ )+", "", part)
                if part.startswith("merkit "):
                    found.append(part)
    return found


@functools.cache
def merkit_command():
    """The Click command Typer builds from ``merkit.cli.app`` (built once: it takes tens of milliseconds)."""
    import typer

    from merkit.cli import app

    return typer.main.get_command(app)


def parse_error(line: str) -> str | None:
    """Why ``merkit`` would refuse the command line's words (None: it parses; missing arguments are fine)."""
    words, redirect = [], False
    for word in shlex.split(line, comments=True)[1:]:  # the shell's redirections are no arguments
        if re.fullmatch(r"\d*(>>?|<)(&\d)?", word):
            redirect = True
        elif redirect or re.match(r"\d*(>>?|<)\S", word):
            redirect = False
        else:
            words.append(word)
    command = merkit_command()
    ctx, name = command.make_context("merkit", [], resilient_parsing=True), "merkit"
    while hasattr(command, "list_commands") and words and not words[0].startswith("-"):
        name, command = words[0], command.get_command(ctx, words[0])
        if command is None:
            return f"no command {name!r}"
        words = words[1:]
        if hasattr(command, "list_commands"):
            ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    try:
        command.make_context(name, words, parent=ctx)
    except Exception as error:  # the vendored Click's UsageError and its kin
        if type(error).__name__ != "MissingParameter":
            return f"{type(error).__name__}: {error}"
    return None


def test_the_parse_check_can_fail():
    assert parse_error("merkit train stores/x --model bigru --no-such-option 3 --out r")
    assert parse_error("merkit data no-such-command x")
    assert parse_error("merkit train stores/x --model bigru --out r") is None
    assert parse_error("merkit data formats > formats.txt 2>/dev/null") is None
    block = '```bash\nO="-o labels=a,b"\nfor S in A; do merkit extract x.jsonl $O --out s$S; done\n```\n'
    assert shell_commands(block) == ["merkit extract x.jsonl -o labels=a,b --out s$S"]


def test_every_command_in_the_readme_and_docs_parses():
    """A renamed or removed option fails here, naming the page and the line that still uses it."""
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    failures = [
        f"{page.relative_to(REPO)}: {line} → {error}"
        for page in pages
        for line in shell_commands(page.read_text("utf-8"))
        if (error := parse_error(line))
    ]
    assert not failures, "\n".join(failures)


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


def test_the_code_map_lists_every_module_with_its_purpose(tmp_path):
    """The code map page is written from the layers contract and the docstrings: every module and package of
    ``src/merkit`` is on it, top-level ones in their layer's order, and a module without a docstring stops it."""
    sys.path.insert(0, str(DOCS / "_hooks"))
    try:
        import code_map
    finally:
        sys.path.remove(str(DOCS / "_hooks"))
    page = code_map.render()
    source = REPO / "src" / "merkit"
    for path in source.iterdir():
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file():
            assert f"`merkit.{path.stem}`" in page, f"{path.name} missing from the code map"
    order = [line.split("`")[1] for line in page.splitlines() if line.startswith("| ") and "`merkit." in line]
    assert order.index("merkit.cli") < order.index("merkit.inference") < order.index("merkit.data") < order.index("merkit.errors")
    bare = tmp_path / "no_docstring.py"
    bare.write_text("x = 1\n")
    with pytest.raises(ValueError, match="has no docstring"):
        code_map.summary(bare)
