"""Media for the audio and visual extractors: decoding, cutting, resampling, frame sampling.

Audio comes from any file FFmpeg reads (wav, flac, mp3, ogg, and the audio track of mp4,
mkv, avi or webm video), decoded with PyAV; channels are averaged to mono, the utterance's
``[start, end)`` span (seconds from the start of the file) is cut with sample precision,
and the clip is resampled with soxr to the rate the extractor needs. Video frames are
decoded with PyAV too and sampled at a fixed rate within the span (each sample time takes
the frame on screen at that moment). Still images (``image``) are read with Pillow (grey,
palette and 16-bit images become 8-bit RGB), and a folder of frames (``frames``, see
:mod:`merkit.data.images`) is sampled like a video whose frame ``i`` shows from
``i / frame_rate`` seconds.

:class:`MediaExtractor` is the base of every extractor that reads media files. It plans
one item per utterance whose bytes are the file's SHA-256 and the span (so moving a
corpus keeps its cache, and editing a file invalidates only its rows), runs the items in
a pool of worker processes when ``workers`` > 1, and turns every :class:`MediaError`
(corrupt file, no audio track, silent clip, span outside the file) into a failed
:class:`~merkit.features.extract.Absent`: the driver lists it in the failure report and
goes on with the rest.
"""

from __future__ import annotations

import functools
import json
import math
import os
import weakref
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from merkit.data.corpus import Corpus, Utterance
from merkit.data.images import frame_files
from merkit.errors import MerkitError
from merkit.features.extract import Absent
from merkit.features.models_dir import file_sha256
from merkit.features.registry import Extractor, WorkItem, get_extractor


class MediaError(MerkitError):
    """A media file cannot give what an extractor needs; the reason is meant for a person."""


@dataclass(frozen=True)
class Clip:
    """One utterance's media: the file, the span in seconds (``None``: from the start / to the end)."""

    path: str
    start: float | None = None
    end: float | None = None
    error: str | None = None  # why the file could not even be hashed (not found, no permission)
    kind: str = ""  # the media key it came from (audio, video, image, frames); "" for a media file


# ------------------------------------------------------------------ audio
_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "u8": 128.0, "flt": 1.0, "dbl": 1.0, "s64": 2.0**63}


def _av():
    try:
        import av
    except ImportError:
        raise MerkitError("reading media needs PyAV: pip install 'merkit[audio]' (or 'merkit[video]')") from None
    return av


def _open(path: str):
    av = _av()
    try:
        return av.open(path)
    except FileNotFoundError:
        raise MediaError("file not found") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"unreadable media file ({_reason(exc)})") from None


def _seconds(container, streams) -> float | None:
    """The container's duration, else the longest of ``streams``' (``None`` when neither says)."""
    if container.duration:
        return container.duration / _av().time_base
    spans = [float(s.duration * s.time_base) for s in streams if s.duration and s.time_base]
    return max(spans, default=None)


def media_duration(path: str | Path) -> float | None:
    """Seconds a media file lasts, from its container (``None`` when unknown or unreadable: decoding reports why)."""
    try:
        with _open(str(path)) as container:
            return _seconds(container, container.streams)
    except (MerkitError, ValueError):  # MediaError is one; so is PyAV missing
        return None


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__


def _mono(frame) -> np.ndarray:
    """Float samples of an audio frame averaged over channels."""
    name = frame.format.name
    planar = name.endswith("p")
    base = name[:-1] if planar else name
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not planar:
        data = data.reshape(-1, channels).T
    data = data.astype(np.float64)
    if base == "u8":
        data -= 128.0
    return (data / _SCALE[base]).mean(axis=0)


class _NoTimestamps(Exception):
    pass


def _decode_span(path: str, start: float, end: float | None, *, seek: bool) -> tuple[np.ndarray, int, float]:
    av = _av()
    with _open(path) as container:
        stream = next(iter(container.streams.audio), None)
        if stream is None:
            raise MediaError("no audio track")
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise MediaError("the audio track has no sample rate")
        first = round(start * rate)
        last = math.inf if end is None else round(end * rate)
        pieces: list[np.ndarray] = []
        position = 0  # sample index of the next sample kept (no overlap between frames)
        duration = container.duration / av.time_base if container.duration else 0.0
        try:
            if seek and start > 0 and stream.time_base:
                container.seek(int(start / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.time is None:
                    if seek:
                        raise _NoTimestamps
                    at = position
                else:
                    at = round(frame.time * rate)
                samples = _mono(frame)
                duration = max(duration, (at + len(samples)) / rate)
                if at >= last:
                    break
                lo = max(first, position, at) - at
                hi = min(len(samples), last - at)
                if hi > lo:
                    pieces.append(samples[lo:hi])
                    position = at + hi
                elif frame.time is None:
                    position = at + len(samples)
        except av.FFmpegError as exc:
            raise MediaError(f"corrupt audio ({_reason(exc)})") from None
    samples = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    return samples, rate, duration


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` at ``rate`` Hz → ``target`` Hz (soxr, high quality); unchanged when equal."""
    if rate == target or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    try:
        import soxr
    except ImportError:
        raise MerkitError("resampling needs soxr: pip install 'merkit[audio]'") from None
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def decode_audio(path: str, *, start: float | None = None, end: float | None = None, sample_rate: int | None = None) -> np.ndarray:
    """Mono float32 samples of ``path`` within ``[start, end)`` seconds, at ``sample_rate`` (default: the file's).

    >>> decode_audio("missing.wav")
    Traceback (most recent call last):
    merkit.features.media.MediaError: file not found
    """
    begin = max(start or 0.0, 0.0)
    try:
        samples, rate, duration = _decode_span(path, begin, end, seek=True)
    except _NoTimestamps:
        samples, rate, duration = _decode_span(path, begin, end, seek=False)
    if samples.size == 0:
        if begin > 0 or end is not None:
            until = "the end" if end is None else f"{end:.3f} s"
            raise MediaError(f"nothing between {begin:.3f} s and {until} (the audio lasts {duration:.3f} s)")
        raise MediaError("empty audio track")
    bad = samples.size - int(np.isfinite(samples).sum())
    if bad:  # a float file can hold them; every feature of the clip would be NaN (or noise around an infinity)
        raise MediaError(f"{bad:,} of {samples.size:,} samples are NaN or infinite")
    return resample(samples, rate, sample_rate or rate)


def check_audible(samples: np.ndarray, floor_db: float) -> None:
    """Raise :class:`MediaError` when the clip's peak is below ``floor_db`` dBFS (a silent or blank recording)."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    level = 20 * math.log10(peak) if peak > 0 else -math.inf
    if level < floor_db:
        raise MediaError(f"silent audio (peak {level:.1f} dBFS, below {floor_db:g} dBFS)")


def trim_quiet(samples: np.ndarray, rate: int, top_db: float, frame: float = 0.025, hop: float = 0.010) -> np.ndarray:
    """``samples`` from the first to the last frame whose RMS is within ``top_db`` of the loudest frame's
    (as ``librosa.effects.trim``, on 25 ms frames every 10 ms)."""
    size, step = max(1, int(frame * rate)), max(1, int(hop * rate))
    if samples.size <= size:
        return samples
    power = np.mean(np.lib.stride_tricks.sliding_window_view(samples, size)[::step].astype(np.float64) ** 2, axis=1)
    loud = np.flatnonzero(power >= power.max() * 10 ** (-top_db / 10))
    return samples[loud[0] * step : loud[-1] * step + size]


# ------------------------------------------------------------------ video
def sample_frames(
    path: str, *, start: float | None = None, end: float | None = None, fps: float = 2.0, max_frames: int = 32
) -> list[tuple[float, np.ndarray]]:
    """RGB frames (``[H, W, 3]`` uint8) on screen at evenly spaced times in ``[start, end)``.

    The span is cut into ``n = ceil(duration · fps)`` equal parts (at most ``max_frames``, at
    least one) and the frame shown at the middle of each part is taken. Returns ``(time, frame)``.
    """
    av = _av()
    with _open(path) as container:
        stream = next(iter(container.streams.video), None)
        if stream is None:
            raise MediaError("no video track")
        stream.thread_type = "AUTO"
        begin = max(start or 0.0, 0.0)
        stop = end if end is not None else _seconds(container, [stream])
        if stop is None:
            raise MediaError("the video has no duration; give the utterance an end time")
        count = min(max_frames, max(1, math.ceil((stop - begin) * fps - 1e-9)))
        step = (stop - begin) / count
        targets = [begin + (k + 0.5) * step for k in range(count)]
        frames: list[tuple[float, np.ndarray]] = []
        shown = None  # (time, frame) on screen before the one being decoded
        try:
            if begin > 0 and stream.time_base:
                container.seek(int(begin / stream.time_base), stream=stream)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                while targets and shown is not None and targets[0] < frame.time:
                    frames.append((targets.pop(0), shown.to_ndarray(format="rgb24")))
                while targets and shown is None and targets[0] < frame.time:  # the span starts before the first frame
                    frames.append((targets.pop(0), frame.to_ndarray(format="rgb24")))
                if not targets or frame.time >= stop:
                    break
                shown = frame
            rate = float(stream.average_rate) if stream.average_rate else fps
            while targets and shown is not None and targets[0] < shown.time + 1.0 / rate:
                frames.append((targets.pop(0), shown.to_ndarray(format="rgb24")))
        except av.FFmpegError as exc:
            raise MediaError(f"corrupt video ({_reason(exc)})") from None
    if not frames:
        raise MediaError(f"no video frames between {begin:.3f} s and {stop:.3f} s")
    return frames


def read_image(path: str | Path) -> np.ndarray:
    """RGB ``[H, W, 3]`` uint8 pixels of an image file; grayscale, palette and 16-bit images are converted."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I"):  # 16- or 32-bit grey: scale to 8 bits
                pixels = np.asarray(image, dtype=np.float64)
                image = Image.fromarray(np.clip(pixels * 255.0 / (65535.0 if pixels.max() > 255 else 255.0), 0, 255).astype(np.uint8))
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise MediaError("file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"unreadable image ({_reason(exc)})") from None


def sample_frame_files(
    files: Sequence[Path], *, start: float | None, end: float | None, fps: float, max_frames: int, frame_rate: float
) -> list[tuple[float, Path]]:
    """The frames of a frame folder at evenly spaced times in ``[start, end)``, as :func:`sample_frames` does for video.

    Frame ``i`` is on screen from ``i / frame_rate`` seconds."""
    begin = max(start or 0.0, 0.0)
    stop = len(files) / frame_rate if end is None else min(end, len(files) / frame_rate)
    if stop <= begin:
        raise MediaError(f"no frames between {begin:.3f} s and {stop:.3f} s ({len(files)} frames at {frame_rate:g} per second)")
    count = min(max_frames, max(1, math.ceil((stop - begin) * fps - 1e-9)))
    step = (stop - begin) / count
    picked = []
    for k in range(count):
        at = begin + (k + 0.5) * step
        picked.append((at, files[min(int(at * frame_rate), len(files) - 1)]))
    return picked


def load_frames(clip: Clip, *, fps: float, max_frames: int, frame_rate: float) -> list[tuple[float, np.ndarray]]:
    """RGB frames of a clip's visual input: the sampled frames of a video or a frame folder, or the one image."""
    if clip.kind == "image":
        return [(0.0, read_image(clip.path))]
    if clip.kind == "frames":
        try:
            files = frame_files(clip.path)
        except MerkitError as exc:
            raise MediaError(exc.message) from None
        picked = sample_frame_files(files, start=clip.start, end=clip.end, fps=fps, max_frames=max_frames, frame_rate=frame_rate)
        frames = []
        for at, path in picked:
            try:
                frames.append((at, read_image(path)))
            except MediaError as exc:
                raise MediaError(f"frame {path.name}: {exc.message}") from None
        return frames
    return sample_frames(clip.path, start=clip.start, end=clip.end, fps=fps, max_frames=max_frames)


# ------------------------------------------------------------------ extractors that read media
def media_clip(utterance: Utterance, sources: Sequence[str]) -> Clip | None:
    """The utterance's clip from the first of ``sources`` (media keys) it has; ``None`` when it has none."""
    for source in sources:
        path = utterance.media.get(source)
        if path:
            return Clip(str(path), utterance.start, utterance.end, kind=source)
    return None


def _one_thread_per_worker() -> None:
    """Worker initializer: the pool is the parallelism, so numeric libraries loaded later use one thread."""
    os.environ["OMP_NUM_THREADS"] = "1"


@functools.lru_cache(maxsize=2)
def _worker_extractor(spec: str) -> MediaExtractor:
    """The extractor a worker process rebuilds from its spec (once per process)."""
    info = json.loads(spec)
    return get_extractor(info["name"], device=info["device"], **{**info["settings"], "workers": 1})


def _encode_in_worker(spec: str, clip: Clip) -> np.ndarray | Absent:
    return _worker_extractor(spec).encode_clip(clip)


class MediaExtractor(Extractor):
    """An extractor that reads one media file (or a span of it) per utterance.

    Subclasses set ``sources`` (the media keys to read, in order of preference) and implement
    :meth:`features` (the row for one clip). Settings named in ``run_settings`` (worker and
    thread counts) do not change the numbers and stay out of the fingerprint.
    """

    sources: tuple[str, ...] = ("audio",)
    run_settings: tuple[str, ...] = ("workers",)

    def __init__(self, *, device: str | None = None, **settings: Any):
        super().__init__(device=device, **settings)
        self._pool: ProcessPoolExecutor | None = None

    def identity(self) -> dict[str, Any]:
        identity = super().identity()
        identity["settings"] = {k: v for k, v in identity["settings"].items() if k not in self.run_settings}
        return identity

    @property
    def workers(self) -> int:
        workers = getattr(self.settings, "workers", 1)
        return workers if workers > 0 else max(1, os.cpu_count() or 1)

    # -------------------------------------------------------------- plan
    def plan(self, corpus: Corpus) -> list[WorkItem | None]:
        items: list[WorkItem | None] = []
        for utterance in corpus.utterances():
            clip = media_clip(utterance, self.sources)
            if clip is None:
                items.append(None)
                continue
            span = {"start": clip.start, "end": clip.end}
            try:
                if clip.kind == "frames":
                    files = frame_files(clip.path)
                    content = {"frames": [[p.name, file_sha256(p)] for p in files], **span}
                    cost = len(files)
                else:
                    content = {"sha256": file_sha256(Path(clip.path)), **span}
                    cost = round(1000 * (clip.end - (clip.start or 0.0))) if clip.end is not None else os.path.getsize(clip.path) // 1000
            except (OSError, MerkitError) as exc:
                if isinstance(exc, MerkitError):
                    reason = exc.message
                else:
                    reason = "file not found" if isinstance(exc, FileNotFoundError) else f"cannot read the file ({_reason(exc)})"
                clip = replace(clip, error=reason)
                content, cost = {"unreadable": clip.path, **span}, 0
            items.append(WorkItem(content=json.dumps(content, sort_keys=True).encode("utf-8"), cost=cost, payload=clip))
        return items

    # -------------------------------------------------------------- encode
    def features(self, clip: Clip) -> np.ndarray:
        """The row (``[D]``) or rows (``[L, D]``) of one clip; :class:`MediaError` when the clip cannot give one."""
        raise NotImplementedError

    def encode_clip(self, clip: Clip) -> np.ndarray | Absent:
        """:meth:`features`, with a media error turned into a failed :class:`Absent` giving the reason."""
        if clip.error is not None:
            return Absent(clip.error)
        try:
            return self.features(clip)
        except MediaError as exc:
            return Absent(exc.message)

    def encode(self, payloads: Sequence[Clip]) -> list[np.ndarray | Absent]:
        if self.workers == 1 or len(payloads) == 1:
            return [self.encode_clip(clip) for clip in payloads]
        spec = json.dumps({**self.spec(), "device": self.device})
        return list(self.pool().map(functools.partial(_encode_in_worker, spec), payloads))

    def pool(self) -> ProcessPoolExecutor:
        """Worker processes, started on first use (forkserver: safe with torch threads in this process)."""
        if self._pool is None:
            import multiprocessing

            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_one_thread_per_worker)
            weakref.finalize(self, self._pool.shutdown, wait=True)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
