"""One exception type for every problem a user can fix (bad file, bad option, bad data).

The CLI turns a :class:`MerkitError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class MerkitError(Exception):
    """A user-facing error naming the file and the place in it where it went wrong."""

    def __init__(self, message: str, *, path: str | Path | None = None, place: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.place = place

    def at(self, path: str | Path | None = None, place: str | None = None) -> "MerkitError":
        """Fill in the file and/or place if they are not known yet; returns self."""
        if self.path is None and path is not None:
            self.path = str(path)
        if self.place is None and place is not None:
            self.place = place
        return self

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.path, self.place) if part)
        return f"{where}: {self.message}" if where else self.message
