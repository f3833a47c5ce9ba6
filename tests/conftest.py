"""Shared fixtures: where the real data lives (``../shared/data`` beside the repo) and helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MERKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(name: str) -> Path:
    """Path of a real corpus under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is not present (CI has it; set MERKIT_SHARED_DATA to point elsewhere)")
    return path
