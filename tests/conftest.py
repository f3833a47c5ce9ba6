"""Shared fixtures: where the real data lives (``../shared/data`` beside the repo) and helpers."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MERKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread in the test process (make test also sets OMP_NUM_THREADS=1 for subprocesses):
    the suite runs many tiny models, for which a second intra-op thread only adds waiting, and on a
    2-core machine shared with other jobs it made them 10-20 times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def shared(name: str) -> Path:
    """Path of a real corpus under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is not present (CI has it; set MERKIT_SHARED_DATA to point elsewhere)")
    return path


def run_cli(*args: str, timeout: float = 600):
    """Run ``python -m merkit ARGS`` in a subprocess; return the CompletedProcess (text mode)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "merkit", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def iemocap_minilm_store(tmp_path_factory):
    """Real IEMOCAP transcripts with frozen MiniLM text features (extracted once per test session)."""
    iemocap = shared("iemocap")
    store = tmp_path_factory.mktemp("stores") / "iemocap-minilm"
    result = run_cli("extract", str(iemocap), "--modality", "text", "--extractor", "minilm", "--out", str(store), "--quiet")
    assert result.returncode == 0, result.stderr
    return store


def run_main(args, capsys):
    """Run the real entry point in-process (with its error handling); return (exit code, stdout, stderr)."""
    from merkit.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def poll_json(process, url: str, seconds: float):
    """The first JSON answer of ``url`` while ``process`` (a starting ``merkit serve``) runs, or None after ``seconds``."""
    import json
    import urllib.request

    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            return json.load(urllib.request.urlopen(url, timeout=2))
        except OSError:
            time.sleep(0.5)
    return None


@contextlib.contextmanager
def serving(app):
    """A real uvicorn server for ``app`` on a free localhost port, in a thread; yields its base URL, stops it after."""
    uvicorn = pytest.importorskip("uvicorn", reason="the server needs the serve extra")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
