"""Which native code holds the memory a live session gains per turn (issue #36): heaptrack over two stream lengths.

    OMP_NUM_THREADS=1 python benchmarks/live_memory_sites.py CKPT [--minutes 4 16] [--voices] [--depth 3]

Plays the stream of ``live_latency.py`` through a :class:`merkit.live.LiveSession` (as ``live_memory.py`` does) twice,
a short and a long one, each in a process under ``heaptrack`` with address randomisation off (``setarch -R``, so the
two runs' unnamed frames match), and ends each process with the session still open (``os._exit``): what heaptrack
reports as not freed is then what the open session and the libraries hold. The difference between the two runs,
by the innermost ``--depth`` frames of each allocation's stack, divided by the turns between them, is what each
allocating site gains per turn. malloc only: NumPy arrays and native libraries, not Python's small objects
(``live_memory.py``'s tracemalloc has those). The native caches are bounded first, as ``merkit live`` does; set
one of :data:`merkit.devices.NATIVE_CACHES` in the environment to see a library's own default. Needs ``heaptrack``
and ``setarch`` (Linux).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path


def play(checkpoint: Path, data: Path, minutes: float, voices: bool) -> None:
    """One stream through a session; prints its turns and leaves the process with the session open."""
    from merkit.devices import bound_native_caches

    bound_native_caches()
    import torch

    import merkit
    from live_latency import build
    from live_memory import played
    from merkit.live import LiveSession, LiveSettings, OneSpeaker

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, merkit.load(checkpoint, threads=1) as predictor:
        path, _ = build(Path(tmp), data, 60 * minutes)
        predictor.predict([{"text": "warming up"}])
        with LiveSession(predictor, LiveSettings(), speakers=None if voices else OneSpeaker()) as session:
            turns = sum(played(session, path)) + sum(e.type == "turn" for e in session.stop())
            print(f"turns {turns}", flush=True)
            os._exit(0)  # the session open: heaptrack's "leaked" is what it and the libraries hold now


def held(checkpoint: Path, data: Path, minutes: float, voices: bool, folder: Path) -> tuple[int, Counter]:
    """Turns of a stream of ``minutes`` and the bytes still held at its end, by allocation stack (innermost last)."""
    out = folder / f"heaptrack-{minutes:g}"
    command = ["setarch", "x86_64", "-R", "heaptrack", "-o", str(out), sys.executable, __file__, str(checkpoint),
               "--data", str(data), "--play", str(minutes), *(["--voices"] if voices else [])]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    turns = int(next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("turns ")))
    folded = folder / f"leaked-{minutes:g}.txt"
    subprocess.run(["heaptrack_print", "-f", f"{out}.zst", "-p", "0", "-a", "0", "-T", "0", "-l", "0", "-F", str(folded),
                    "--flamegraph-cost-type", "leaked"], capture_output=True, check=True)  # fmt: skip
    stacks: Counter = Counter()
    for line in folded.read_text().splitlines():
        stack, _, size = line.rpartition(" ")
        stacks[tuple(stack.split(";"))] += int(size)
    return turns, stacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--minutes", type=float, nargs=2, default=[4.0, 16.0], metavar=("SHORT", "LONG"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess")
    parser.add_argument("--voices", action="store_true", help="speakers from voice embeddings (default: one speaker)")
    parser.add_argument("--depth", type=int, default=3, help="innermost frames that name a site")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--play", type=float, help=argparse.SUPPRESS)  # the child: one stream under heaptrack
    args = parser.parse_args()
    if args.play is not None:
        play(args.checkpoint, args.data, args.play, args.voices)
    missing = [tool for tool in ("heaptrack", "heaptrack_print", "setarch") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"needs {', '.join(missing)} on the PATH")
    with tempfile.TemporaryDirectory() as tmp:
        (short, before), (long, after) = (held(args.checkpoint, args.data, m, args.voices, Path(tmp)) for m in args.minutes)
    sites: Counter = Counter()
    for stacks, sign in ((after, 1), (before, -1)):
        for stack, size in stacks.items():
            sites[";".join(stack[-args.depth :])] += sign * size
    turns = long - short
    print(f"{short} and {long} turns; held by the open session and the libraries, gained per turn between them: "
          f"{sum(sites.values()) / turns / 1024:.1f} kB")  # fmt: skip
    for site, size in sites.most_common(args.top):
        print(f"{size / turns / 1024:8.2f} kB  {site[-300:]}")


if __name__ == "__main__":
    main()
