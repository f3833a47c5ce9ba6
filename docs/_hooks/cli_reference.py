"""MkDocs hook: the CLI reference page is written at build time from the Typer app itself, so it never drifts.

``docs/reference/cli.md`` holds the marker below; every command and sub-command of ``merkit`` replaces it:
its help, usage line, each argument and option as ``--help`` shows it (defaults included), and the example
its ``--help`` ends with. Typer ships its own copy of Click, so the objects are read by their Click API only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

MARKER = "<!-- merkit-cli-reference -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())


def render() -> str:
    import typer

    from merkit.cli import app

    root = typer.main.get_command(app)
    return "\n".join(_command_markdown(path, command, ctx) for path, command, ctx in _walk(root, ["merkit"], None))


def _walk(command: Any, path: list[str], parent: Any) -> Iterator[tuple[list[str], Any, Any]]:
    ctx = command.context_class(command, info_name=path[-1], parent=parent)
    yield path, command, ctx
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, [*path, name], ctx)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _command_markdown(path: list[str], command: Any, ctx: Any) -> str:
    lines = [f"{'#' * min(len(path) + 1, 4)} {' '.join(path)}", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    lines += ["```text", command.get_usage(ctx).strip(), "```", ""]
    records = [p.get_help_record(ctx) for p in command.get_params(ctx) if p.name != "help" and not getattr(p, "hidden", False)]
    records = [record for record in records if record]
    if records:
        lines += ["| argument / option | what it does |", "|---|---|"]
        lines += [f"| `{_cell(names)}` | {_cell(text)} |" for names, text in records]
        lines.append("")
    if command.epilog:
        lines += ["```bash", command.epilog.strip().removeprefix("Example:").strip(), "```", ""]
    return "\n".join(lines)
