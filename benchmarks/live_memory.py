"""Where a long live session's memory goes (issue #36): resident memory per turn, what the allocator keeps, what grows.

    OMP_NUM_THREADS=1 python benchmarks/live_memory.py CKPT [--minutes 30] [--out memory30.json]

Plays the stream of ``live_latency.py`` (RAVDESS test actors and espeak-ng lines) through a
:class:`merkit.live.LiveSession` as fast as it is processed (``--no-pace``: the memory a session keeps depends on
its turns, not on the clock), one thread, one speaker. After every turn: the resident memory (RSS), and the RSS
again after glibc's ``malloc_trim(0)`` hands the free pages of its heaps back to the system, so that memory the
allocator merely keeps is told apart from memory something holds. From the middle of the stream ``tracemalloc``
records Python's and NumPy's allocations: the sites that grew over the second half, and the Python objects by type
that became more numerous. And the conversation's own data per turn: its features, its turn record (text, labels,
probabilities), and the audio file the extractors read (on disk, in the session's temporary folder).
Slopes are least-squares fits over the second half, in MB per minute of audio.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
from live_latency import build, report


def trimmer():
    """glibc's ``malloc_trim`` (None elsewhere)."""
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def slope(points: list[tuple[float, float]]) -> float:
    """MB per minute of audio over the second half of ``(seconds, MB)`` points."""
    half = points[len(points) // 2 :]
    return float(np.polyfit([s / 60 for s, _ in half], [m for _, m in half], 1)[0])


def objects() -> Counter:
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def own_data(session) -> dict[str, float]:
    """Bytes per turn of what the conversation itself keeps: features, turn records, the turns' audio files."""
    turns = max(1, len(session.turns))
    features = sum(np.asarray(row).nbytes for rows in session.rows.values() for row in rows.values())
    records = sum(len(turn.model_dump_json()) for turn in session.turns)
    audio = sum(path.stat().st_size for path in session.folder.iterdir())
    return {"features": features / turns, "turn_record_json": records / turns, "audio_file_on_disk": audio / turns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess")
    parser.add_argument("--context-turns", type=int, default=None)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import psutil
    import torch

    import merkit
    from merkit.live import LiveSession, LiveSettings, OneSpeaker
    from merkit.live_cli import file_frames, paced

    torch.set_num_threads(1)
    process, trim = psutil.Process(), trimmer()
    rss = lambda: process.memory_info().rss / 2**20  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp, merkit.load(args.checkpoint, threads=1) as predictor:
        path, parts = build(Path(tmp), args.data, 60 * args.minutes)
        middle = parts[-1]["end"] / 2
        predictor.predict([{"text": "warming up"}])
        kept, trimmed, traced, before, snapshot, turns = [], [], None, None, None, 0
        settings = LiveSettings(context_turns=args.context_turns)
        with LiveSession(predictor, settings, speakers=OneSpeaker()) as session:
            for frame, arrived in paced(file_frames(path), False, time.monotonic):
                for speech in session.listen(frame, arrived):
                    turns += sum(e.type == "turn" for e in session.recognise(speech))
                    overhead = tracemalloc.get_tracemalloc_memory() / 2**20 if tracemalloc.is_tracing() else 0.0
                    kept.append((session.seconds, rss() - overhead))
                    if trim is not None:
                        trim(0)
                        trimmed.append((session.seconds, rss() - overhead))
                    if snapshot is None and session.seconds >= middle:
                        before = objects()
                        tracemalloc.start(8)
                        snapshot, traced = tracemalloc.take_snapshot(), session.seconds
            session.stop()
            after, end = objects(), tracemalloc.take_snapshot()
            mine = own_data(session)
        tracemalloc.stop()
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    grown = end.filter_traces(skip).compare_to(snapshot.filter_traces(skip), "traceback")
    result = {
        "checkpoint": str(args.checkpoint), "minutes": round(parts[-1]["end"] / 60, 2), "turns": turns, "settings": settings.model_dump(),
        "rss_mb": {"first_turn": kept[0][1], "last_turn": kept[-1][1], "slope_mb_per_minute_second_half": slope(kept)},
        "rss_after_malloc_trim_mb": {"first_turn": trimmed[0][1], "last_turn": trimmed[-1][1], "slope_mb_per_minute_second_half": slope(trimmed)}
        if trimmed else None,
        "traced_from_second": traced,
        "traced_growth_mb": sum(s.size_diff for s in grown) / 2**20,
        "traced_growth_top": [{"kb": round(s.size_diff / 1024, 1), "blocks": s.count_diff, "where": s.traceback.format(limit=4)}
                              for s in [s for s in grown if s.size_diff > 0][: args.top]],
        "objects_more": (after - before).most_common(args.top),
        "conversation_bytes_per_turn": mine,
    }  # fmt: skip
    report(result, args.out)


if __name__ == "__main__":
    main()
