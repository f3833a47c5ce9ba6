"""The live stream's input: binary PCM frames decoded, and voice activity that closes a turn at a pause.

:class:`StreamingVad` is the recording pipeline's Silero VAD (:func:`~merkit.recording.speech_spans`) run window by
window with its state carried across, so a live turn is cut as the offline timeline cuts the whole file, as soon
as the stream allows; it keeps only the audio of the turn in progress.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from merkit.errors import MerkitError
from merkit.recording import SAMPLE_RATE, TurnSettings, _faster_whisper

WINDOW = 512  # samples per Silero window at 16 kHz
CONTEXT = 64  # samples of the previous window Silero v6 reads beside each window
SAMPLE_TYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}


def decode_frame(data: bytes, sample_type: str) -> np.ndarray:
    """A binary frame of little-endian mono 16 kHz PCM (``int16`` or ``float32``) as float32 samples in [-1, 1].

    >>> decode_frame(b"\\x00\\x40\\x00\\xc0", "int16").tolist()
    [0.5, -0.5]
    """
    dtype = SAMPLE_TYPES.get(sample_type)
    if dtype is None:
        raise MerkitError(f"unknown sample type {sample_type!r} (int16 or float32)")
    if len(data) % dtype.itemsize:
        raise MerkitError(f"a frame of {len(data)} bytes is not whole {sample_type} samples ({dtype.itemsize} bytes each)")
    samples = np.frombuffer(data, dtype=dtype)
    if dtype.kind == "i":
        return samples.astype(np.float32) / 32768.0
    if not np.isfinite(samples).all():
        raise MerkitError("the frame holds a NaN or infinite sample")
    if samples.size and float(np.abs(samples).max()) > 1.0 + 1e-6:
        raise MerkitError("float32 samples must lie in [-1, 1]")
    return samples.astype(np.float32)


@dataclass
class Speech:
    """A closed turn's span: samples from the stream's start; ``heard`` when its end of speech arrived."""

    start: int
    end: int
    speech_end: int  # where the voice stopped (before the padding)
    audio: np.ndarray = field(repr=False)
    heard: float = 0.0

    @property
    def seconds(self) -> tuple[float, float]:
        return round(self.start / SAMPLE_RATE, 3), round(self.end / SAMPLE_RATE, 3)


class StreamingVad:
    """Silero VAD (faster-whisper's bundled v6 model) fed window by window, with the decisions of
    faster-whisper's ``get_speech_timestamps`` (threshold, silence threshold 0.15 below it, ``min_pause``,
    ``max_segment`` split at the last pause, ``padding`` shared halfway across a short gap), made as soon as
    the stream allows. Silero carries its state across windows, so the probabilities equal the whole-file ones.
    Keeps only the audio of the turn in progress."""

    def __init__(self, settings: TurnSettings):
        self.model = _faster_whisper().vad.get_vad_model()
        self.threshold = settings.vad_threshold
        self.negative = max(settings.vad_threshold - 0.15, 0.01)
        self.pad = int(SAMPLE_RATE * settings.padding)
        self.min_silence = SAMPLE_RATE * settings.min_pause
        self.max_speech = SAMPLE_RATE * settings.max_segment - WINDOW - 2 * self.pad
        self.min_segment = settings.min_segment
        self.h = np.zeros((1, 1, 128), np.float32)
        self.c = np.zeros((1, 1, 128), np.float32)
        self.context = np.zeros((1, CONTEXT), np.float32)
        self.partial = np.zeros(0, np.float32)  # samples short of a whole window
        self.windows = 0
        self.triggered = False
        self.current = 0  # start of the speech in progress
        self.temp_end = self.prev_end = self.next_start = 0
        self.waiting: list[int] | None = None  # [padded start, speech end] of a closed speech whose padded end is open
        self.next_padded_start: int | None = None
        self.buffer = np.zeros(0, np.float32)  # the stream from sample ``kept``
        self.kept = 0
        self.received = 0
        self.arrivals: deque[tuple[int, float]] = deque()  # (samples received by then, time)

    # ---------------------------------------------------------------- the stream
    def push(self, samples: np.ndarray, arrived: float) -> list[Speech]:
        """Add samples (float32, 16 kHz mono) that arrived at ``arrived``; the turns that closed."""
        self.received += samples.size
        self.arrivals.append((self.received, arrived))
        self.buffer = np.concatenate([self.buffer, samples])
        joined = np.concatenate([self.partial, samples])
        whole = joined.size // WINDOW * WINDOW
        self.partial = joined[whole:]
        return self._windows(joined[:whole])

    def finish(self) -> list[Speech]:
        """Close the stream: the remainder padded to a window as faster-whisper pads a file, the open turn closed."""
        length = self.received
        closed = self._windows(np.pad(self.partial, (0, WINDOW - self.partial.size)))
        self.partial = np.zeros(0, np.float32)
        if self.triggered:
            closed += self._close(self.current, length)
            self.triggered = False
        if self.waiting is not None:
            closed += self._final(self.waiting[0], min(length, self.waiting[1] + self.pad), self.waiting[1])
            self.waiting = None
        return closed

    def _windows(self, audio: np.ndarray) -> list[Speech]:
        if audio.size == 0:
            return []
        batch = audio.reshape(-1, WINDOW)
        contexts = np.concatenate([self.context, batch[:-1, -CONTEXT:]])
        self.context = batch[-1:, -CONTEXT:].copy()
        probabilities, self.h, self.c = self.model.session.run(
            None, {"input": np.concatenate([contexts, batch], axis=1), "h": self.h, "c": self.c}
        )
        closed: list[Speech] = []
        for probability in np.asarray(probabilities).reshape(-1):
            closed += self._step(float(probability), WINDOW * self.windows)
            self.windows += 1
            closed += self._settle(WINDOW * self.windows)
        self._forget()
        return closed

    def _step(self, p: float, at: int) -> list[Speech]:
        """One window of faster-whisper's ``get_speech_timestamps`` loop (its variable names)."""
        closed: list[Speech] = []
        if p >= self.threshold and self.temp_end:
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = at
        if p >= self.threshold and not self.triggered:
            self.triggered, self.current = True, at
            return closed
        if self.triggered and at - self.current > self.max_speech:
            if self.prev_end:
                closed += self._close(self.current, self.prev_end)
                if self.next_start < self.prev_end:
                    self.triggered = False
                else:
                    self.current = self.next_start
                self.prev_end = self.next_start = self.temp_end = 0
            else:
                closed += self._close(self.current, at)
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
                return closed
        if p < self.negative and self.triggered:
            if not self.temp_end:
                self.temp_end = at
            if at - self.temp_end > SAMPLE_RATE * 98 / 1000:
                self.prev_end = self.temp_end
            if at - self.temp_end >= self.min_silence:
                closed += self._close(self.current, self.temp_end)
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
        return closed

    def _close(self, start: int, end: int) -> list[Speech]:
        """A speech stretch ended: the one before it gets its padded end, this one waits for its own."""
        closed = self._share_gap(start) if self.waiting is not None else []
        padded = self.next_padded_start if self.next_padded_start is not None else max(0, start - self.pad)
        self.next_padded_start = None
        self.waiting = [padded, end]
        return closed

    def _share_gap(self, start: int) -> list[Speech]:
        """The waiting speech's end and the next one's start, padded across the gap between them."""
        before, end = self.waiting
        gap = start - end
        if gap < 2 * self.pad:
            self.next_padded_start = max(0, start - gap // 2)
            closed = self._final(before, end + gap // 2, end)
        else:
            self.next_padded_start = max(0, start - self.pad)
            closed = self._final(before, end + self.pad, end)
        self.waiting = None
        return closed

    def _settle(self, now: int) -> list[Speech]:
        """Give the waiting speech its end as soon as the next speech's start (or its absence) decides it."""
        if self.waiting is None:
            return []
        if self.triggered and self.current >= self.waiting[1]:
            return self._share_gap(self.current)
        if now - self.waiting[1] >= 2 * self.pad:
            before, end = self.waiting
            self.waiting = None
            self.next_padded_start = None
            return self._final(before, end + self.pad, end)
        return []

    def _final(self, start: int, end: int, speech_end: int) -> list[Speech]:
        """A turn with its final span, unless shorter than ``min_segment`` (dropped, as offline)."""
        end = min(end, self.received)
        if round(end / SAMPLE_RATE, 3) - round(start / SAMPLE_RATE, 3) < self.min_segment:
            return []
        audio = self.buffer[max(0, start - self.kept) : end - self.kept].copy()
        index = bisect.bisect_left([n for n, _ in self.arrivals], max(speech_end, 1))
        heard = self.arrivals[min(index, len(self.arrivals) - 1)][1]
        return [Speech(start, end, speech_end, audio, heard)]

    def tentative(self, silence: float) -> Speech | None:
        """The turn in progress as it will close if its current pause, already ``silence`` seconds long, lasts
        ``min_pause`` (None while there is no such pause, or when a pause could not close it so)."""
        if not (self.triggered and self.temp_end) or self.min_silence < 2 * self.pad:
            return None
        if WINDOW * self.windows - self.temp_end < max(silence * SAMPLE_RATE, self.pad) or self.received < self.temp_end + self.pad:
            return None
        start = self.next_padded_start if self.next_padded_start is not None else max(0, self.current - self.pad)
        end = self.temp_end + self.pad
        if round(end / SAMPLE_RATE, 3) - round(start / SAMPLE_RATE, 3) < self.min_segment:
            return None
        return Speech(start, end, self.temp_end, self.buffer[max(0, start - self.kept) : end - self.kept].copy())

    def _forget(self) -> None:
        """Drop audio and arrival times no open or future turn can need."""
        keep = WINDOW * self.windows - self.pad - WINDOW
        if self.triggered:
            keep = min(keep, self.current - self.pad)
        if self.waiting is not None:
            keep = min(keep, self.waiting[0])
        if self.next_padded_start is not None:
            keep = min(keep, self.next_padded_start)
        keep = max(keep, self.kept)
        if keep > self.kept:
            self.buffer = self.buffer[keep - self.kept :]
            self.kept = keep
        while len(self.arrivals) > 1 and self.arrivals[0][0] < keep:
            self.arrivals.popleft()
