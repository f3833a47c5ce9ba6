"""Progress for every long stage (extraction, fine-tuning, training, prediction, recordings), on stderr.

A live bar (tqdm; Lightning's own bar in training) only where it is watched: a terminal, or a notebook.
Redirected to a file or a pipe, a bar's carriage returns and escape codes become fragments, so there
progress is plain log lines instead: one every minute and one at the end, or one per training epoch.
``None`` when progress is off or tqdm is missing: a bar is a nicety, what matters is logged anyway.
"""

from __future__ import annotations

import sys
import time
from typing import Any

LINE_EVERY_S = 60.0


def live() -> bool:
    """Whether progress may redraw itself: both standard streams on a terminal (bars write to either), or a notebook."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr)) or "ipykernel" in sys.modules


def progress_bar(total: float | None, desc: str, *, enabled: bool = True, unit: str = "utt", leave: bool = True) -> Any:
    """A tqdm bar over ``total`` (``None``: an open count, e.g. seconds of a recording of unknown length),
    or its :class:`LineProgress` stand-in away from a terminal."""
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    if not live():
        return LineProgress(total, desc, unit=unit)
    return tqdm(
        total=total, desc=desc, unit=unit, leave=leave, mininterval=0.5, smoothing=0.05, file=sys.stderr,
        dynamic_ncols=True,
    )  # fmt: skip


class LineProgress:
    """The part of a tqdm bar merkit uses (``n``, ``update``, ``close``), told as whole lines."""

    def __init__(self, total: float | None, desc: str, *, unit: str):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.started = self.shown = time.monotonic()
        self.closed = False

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self.shown >= LINE_EVERY_S:
            self._line()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()

    def _line(self) -> None:
        from tqdm import tqdm

        self.shown = time.monotonic()
        meter = tqdm.format_meter(self.n, self.total, self.shown - self.started, ncols=0, prefix=self.desc, unit=self.unit)
        print(meter, file=sys.stderr, flush=True)
