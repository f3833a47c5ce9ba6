"""Where a long live session's memory goes (issue #36): resident memory per turn, what the allocator keeps, what grows.

    OMP_NUM_THREADS=1 python benchmarks/live_memory.py CKPT [--minutes 30] [--out memory30.json]

Plays the stream of ``live_latency.py`` (RAVDESS test actors and espeak-ng lines) through a
:class:`merkit.live.LiveSession` as fast as it is processed (``--no-pace``: the memory a session keeps depends on
its turns, not on the clock), one thread, one speaker (``--voices``: speakers from voice embeddings, CAM++, as a
live session assigns them by default), the native caches bounded first as ``merkit live`` does. After every turn,
in MB: the resident memory (RSS); the RSS again after glibc's ``malloc_trim(0)`` hands the free pages of its heaps
back to the system, so that memory the allocator merely keeps is told apart from memory something holds; what
malloc has handed out and not had back (``mallinfo2``: native libraries and NumPy, without the allocator's free
blocks); the resident memory that is anonymous and file-backed; Python's small-object arenas and the blocks in use
in them (not while tracemalloc runs, which takes their place). With ``--trace``, from the middle of the stream
``tracemalloc`` records Python's and NumPy's allocations: the sites that grew over the second half, and the Python
objects by type that became more numerous. And the conversation's own data
per turn: its features, its turn record (text, labels, probabilities), and the audio file the extractors read (on
disk, in the session's temporary folder). Slopes are least-squares fits over the second half, in MB per minute of
audio; ``series_seconds_mb`` has every turn's figures.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import gc
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from live_latency import build, report


@functools.cache  # find_library runs ldconfig: once, not after every turn
def glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def trimmer():
    """glibc's ``malloc_trim`` (None elsewhere)."""
    return getattr(glibc(), "malloc_trim", None)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def malloc_in_use():
    """MB that glibc's malloc has handed out and not had back, in its heaps and as mappings (None without glibc 2.33)."""
    info = getattr(glibc(), "mallinfo2", None)
    if info is None:
        return None
    info.restype = _Mallinfo2

    def mb() -> float:
        now = info()
        return (now.uordblks + now.hblkhd) / 2**20

    return mb


def pymalloc_mb() -> dict[str, float]:
    """Python's small-object allocator: its arenas (1 MiB each, returned only when wholly free) and the bytes of the
    blocks in use in them, from CPython's own report (``_PyObject_DebugMallocStats``, into a file of our own)."""
    libc = glibc()
    libc.fopen.restype = ctypes.c_void_p
    with tempfile.NamedTemporaryFile(mode="r") as report:
        handle = libc.fopen(report.name.encode(), b"w")
        ctypes.pythonapi._PyObject_DebugMallocStats(ctypes.c_void_p(handle))
        libc.fclose(ctypes.c_void_p(handle))
        lines = {key.strip("# ").strip(): value for key, _, value in (line.partition("=") for line in report) if value}
    number = lambda key: float(lines[key].replace(",", ""))  # noqa: E731
    return {"pymalloc_arenas": number("arenas allocated current"), "pymalloc_blocks": number("bytes in allocated blocks") / 2**20}


def resident_mb() -> dict[str, float]:
    """The process's resident memory that is anonymous (heaps, arenas, mappings) and file-backed (``/proc/self/status``)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Rss"))
    return {"rss_anon": int(fields["RssAnon"].split()[0]) / 1024, "rss_file": int(fields["RssFile"].split()[0]) / 1024}


def slope(points: list[tuple[float, float]]) -> float:
    """MB per minute of audio over the second half of ``(seconds, MB)`` points."""
    half = points[len(points) // 2 :]
    return float(np.polyfit([s / 60 for s, _ in half], [m for _, m in half], 1)[0])


def played(session, path: Path) -> Iterator[int]:
    """The stream file through ``session`` as fast as it is processed: the turns each closed stretch of speech gave."""
    from merkit.live_cli import file_frames, paced

    for frame, arrived in paced(file_frames(path), False, time.monotonic):
        for speech in session.listen(frame, arrived):
            yield sum(e.type == "turn" for e in session.recognise(speech))


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
    parser.add_argument("--voices", action="store_true", help="speakers from voice embeddings (default: one speaker)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc from the middle of the stream (Python's arenas then unread)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from merkit.devices import bound_native_caches

    bound_native_caches()  # as `merkit live` does, before torch is imported
    import psutil
    import torch

    import merkit
    from merkit.live import LiveSession, LiveSettings, OneSpeaker

    torch.set_num_threads(1)
    process, trim, in_use = psutil.Process(), trimmer(), malloc_in_use()

    def measured() -> dict[str, float]:
        """MB after a turn; tracemalloc's own memory (malloc'd) taken out of what holds it."""
        overhead = tracemalloc.get_tracemalloc_memory() / 2**20 if tracemalloc.is_tracing() else 0.0
        now = {"rss": process.memory_info().rss / 2**20 - overhead}
        if trim is not None:
            trim(0)
            now["rss_after_malloc_trim"] = process.memory_info().rss / 2**20 - overhead
        if in_use is not None:
            now["malloc_in_use"] = in_use() - overhead
        resident = resident_mb()
        arenas = {} if tracemalloc.is_tracing() else pymalloc_mb()  # CPython reports them only while it allocates alone
        return {**now, "rss_anon_after_trim": resident["rss_anon"] - overhead, "rss_file": resident["rss_file"], **arenas}

    with tempfile.TemporaryDirectory() as tmp, merkit.load(args.checkpoint, threads=1) as predictor:
        path, parts = build(Path(tmp), args.data, 60 * args.minutes)
        middle = parts[-1]["end"] / 2
        predictor.predict([{"text": "warming up"}])
        series, traced, before, snapshot, turns = {}, None, None, None, 0
        settings = LiveSettings(context_turns=args.context_turns)
        with LiveSession(predictor, settings, speakers=None if args.voices else OneSpeaker()) as session:
            for new in played(session, path):
                turns += new
                for name, mb in measured().items():
                    series.setdefault(name, []).append((session.seconds, mb))
                if args.trace and snapshot is None and session.seconds >= middle:
                    before = objects()
                    tracemalloc.start(8)
                    snapshot, traced = tracemalloc.take_snapshot(), session.seconds
            session.stop()
            mine = own_data(session)
            if snapshot is not None:
                after, end = objects(), tracemalloc.take_snapshot()
                tracemalloc.stop()
    result = {
        "checkpoint": str(args.checkpoint), "minutes": round(parts[-1]["end"] / 60, 2), "turns": turns, "settings": settings.model_dump(),
        "speakers": "voice embeddings" if args.voices else "one",
        "memory_mb": {name: {"first_turn": points[0][1], "last_turn": points[-1][1], "slope_mb_per_minute_second_half": slope(points)}
                      for name, points in series.items()},
        "conversation_bytes_per_turn": mine,
    }  # fmt: skip
    if snapshot is not None:
        skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
        grown = end.filter_traces(skip).compare_to(snapshot.filter_traces(skip), "traceback")
        result |= {
            "traced_from_second": traced,
            "traced_growth_mb": sum(s.size_diff for s in grown) / 2**20,
            "traced_growth_top": [{"kb": round(s.size_diff / 1024, 1), "blocks": s.count_diff, "where": s.traceback.format(limit=4)}
                                  for s in [s for s in grown if s.size_diff > 0][: args.top]],
            "objects_more": (after - before).most_common(args.top),
        }  # fmt: skip
    result["series_seconds_mb"] = {name: [(round(t, 1), round(mb, 3)) for t, mb in points] for name, points in series.items()}
    report(result, args.out)


if __name__ == "__main__":
    main()
