"""MkDocs hook: the code map is written at build time from the layers contract and the modules' docstrings.

``<!-- merkit-code-map -->`` in ``docs/reference/code-map.md`` becomes one table row per layer of the import-linter
contract in ``pyproject.toml`` (top to bottom, the order imports may point down), each module or package of the
layer with the first sentence of its docstring, and a package's own modules under it. The docstrings are read
from the source (``ast``), nothing is imported, so a module added to the contract shows up without anyone editing
the page, and one without a docstring fails the build.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

MARKER = "<!-- merkit-code-map -->"
ROLE = re.compile(r":(?:class|mod|func|meth|attr):`~?(?:[\w.]*\.)?([\w]+)`")  # Sphinx roles → the plain name
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src" / "merkit"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown


def layers() -> list[list[str]]:
    """The top-level contract's layers, top first, each a list of sibling modules."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["importlinter"]["contracts"]
    (top,) = [c for c in contracts if c["type"] == "layers" and c.get("containers") == ["merkit"]]
    return [[name.strip() for name in layer.split("|")] for layer in top["layers"]]


def summary(path: Path) -> str:
    """The first sentence of a module's docstring (a file, or a package's ``__init__.py``)."""
    file = path / "__init__.py" if path.is_dir() else path
    doc = ast.get_docstring(ast.parse(file.read_text("utf-8")))
    if not doc:
        raise ValueError(f"{file.relative_to(REPO) if file.is_relative_to(REPO) else file} has no docstring: say in one sentence what the module is for")
    first = ROLE.sub(r"``\1``", " ".join(doc.split("\n\n")[0].split()))
    return first.split(". ")[0].rstrip(".") + "."


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    rows = ["| layer | module | what it is for |", "|---|---|---|"]
    for number, layer in enumerate(layers(), start=1):
        for name in layer:
            path = SOURCE / name if (SOURCE / name).is_dir() else SOURCE / f"{name}.py"
            rows.append(f"| {number} | `merkit.{name}` | {_cell(summary(path))} |")
            if path.is_dir():
                for inner in sorted(p for p in path.iterdir() if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()):
                    rows.append(f"| | `  .{inner.stem}` | {_cell(summary(inner))} |")
    return "\n".join(rows)
