"""One progress bar for every long stage (extraction, fine-tuning, prediction, recordings): tqdm on stderr.

``None`` when the bar is off or tqdm is missing: a bar is a nicety, what matters is logged anyway.
"""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: float | None, desc: str, *, enabled: bool = True, unit: str = "utt", leave: bool = True, initial: float = 0) -> Any:
    """A tqdm bar over ``total`` (``None``: an open count, e.g. seconds of a recording of unknown length)."""
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total, desc=desc, unit=unit, initial=initial, leave=leave, mininterval=0.5, smoothing=0.05, file=sys.stderr,
        dynamic_ncols=True,
    )  # fmt: skip
