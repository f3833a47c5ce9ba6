"""Time limits of a prediction: a ``time.monotonic()`` deadline checked between steps.

Below both :mod:`merkit.inference` (which checks it between model calls) and :mod:`merkit.recording`
(between transcription chunks), so neither needs the other for it."""

from __future__ import annotations

import time

from merkit.errors import MerkitError


class TimeLimitExceeded(MerkitError):
    """A prediction ran past its deadline."""


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeLimitExceeded("the prediction ran past its time limit")
