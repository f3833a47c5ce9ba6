"""Text helpers shared by the table readers: decoding, mojibake repair, CSV rows with line numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import ftfy

from merkit.errors import MerkitError

# Repair encoding damage only: keep curly quotes, ligatures and widths as the authors wrote them.
_REPAIR = ftfy.TextFixerConfig(uncurl_quotes=False, fix_latin_ligatures=False, fix_character_width=False)


def repair_text(text: str) -> str:
    """Undo mojibake such as ``mustâ\\x80\\x99ve`` or a stray cp1252 ``\\x92`` → ``must’ve``."""
    return ftfy.fix_text(text, _REPAIR)


def read_text(path: Path) -> str:
    """Decode a text file as UTF-8 (with or without BOM), falling back to cp1252/latin-1."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MerkitError(f"cannot read file: {exc.strerror}", path=path) from None
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def text_lines(path: Path) -> list[str]:
    """Lines split at newlines only (``str.splitlines`` would also split at ``\x85`` and ``\u2028``)."""
    return [line.removesuffix("\r") for line in read_text(path).split("\n")]


def csv_rows(
    path: Path, *, required: tuple[str, ...], delimiter: str = ","
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)`` of a headed CSV, checking columns and field counts.

    A missing column, a row with too few or too many fields, or an unterminated quote
    (a truncated file) is a :class:`MerkitError` naming the file and line.
    """
    # Not str.splitlines(): it also breaks at \x85 and \u2028, which occur inside damaged text.
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise MerkitError("empty file (no header row)", path=path) from None
    except csv.Error as exc:
        raise MerkitError(f"malformed header: {exc}", path=path, place="line 1") from None
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        raise MerkitError(
            f"missing column(s) {', '.join(missing)}; found: {', '.join(header)}", path=path, place="line 1"
        )
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise MerkitError(f"malformed CSV ({exc}); is the file truncated?", path=path, place=f"line {reader.line_num}") from None
        if not fields or all(not value.strip() for value in fields):
            continue
        if len(fields) != len(header):
            raise MerkitError(
                f"row has {len(fields)} fields, the header has {len(header)}; is the file truncated?",
                path=path,
                place=f"line {reader.line_num}",
            )
        yield reader.line_num, dict(zip(header, fields, strict=True))
