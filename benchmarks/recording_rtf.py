"""Real-time factor of each stage of ``merkit predict RECORDING`` on this machine (issue #18).

    python benchmarks/recording_rtf.py [--minutes 2] [--asr tiny] [--chunk 300]

Builds a recording of real synthetic speech (espeak-ng sentences of two voices with 1–3 s pauses,
joined by ffmpeg, 16 kHz wav) of about ``--minutes``, then times, over the whole file: decoding in
chunks, Silero VAD, diarization's speech and overlap (segmentation-3.0), speaker embeddings of that speech
(CAM++ windows, ``--speakers auto``) and their clustering (issue #35; each includes its one-time start: loading
segmentation-3.0 or CAM++, importing scikit-learn), Whisper transcription of the speech segments. Prints seconds
of processing per second of audio for each stage (below 1: faster than real time) and the peak resident memory
of the process after each stage's first run (so what each stage's start adds).
The model stage (features + a conversation model) is measured by ``benchmarks/extraction.py``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

SENTENCES = [
    "the weather today is lovely and i feel wonderful about our trip",
    "i am really angry that you forgot my birthday again",
    "please tell me what happened at the station yesterday",
    "nobody told me the meeting had been moved to friday",
]


def build(folder: Path, seconds: float) -> Path:
    parts, clock, i = [], 0.0, 0
    while clock < seconds:
        clip = folder / f"line{i}.wav"
        voice = "en-us" if i % 2 == 0 else "en-gb+m3"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(clip), SENTENCES[i % len(SENTENCES)]], check=True)
        pause = folder / f"pause{i}.wav"
        length = 1.0 + (i % 3)
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", str(length), str(pause)], check=True)
        parts += [clip, pause]
        clock += length + 3.5
        i += 1
    listing = folder / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out = folder / "recording.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000", str(out)], check=True)
    return out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--asr", default="tiny")
    parser.add_argument("--chunk", type=float, default=300.0)
    args = parser.parse_args()

    import numpy as np

    from merkit.diarization import DiarizationSettings, chunk_speech, turns_from_windows, window_embeddings
    from merkit.recording import SAMPLE_RATE, RecordingSettings, chunks, load_asr, speech_spans, transcribe

    settings = RecordingSettings(asr=args.asr, chunk=args.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp), 60 * args.minutes)
        model = load_asr(settings)
        timing = {"decode": 0.0, "vad": 0.0, "segmentation": 0.0, "embeddings": 0.0, "clustering": 0.0, "asr": 0.0}
        peaks: dict[str, float] = {}
        diarization, speech, overlaps, windows, vectors = DiarizationSettings(), [], [], [], []
        audio_seconds, segments = 0.0, 0
        pieces = chunks(path, settings.chunk)
        while True:
            began = time.perf_counter()
            try:
                offset, audio = next(pieces)
            except StopIteration:
                break
            timing["decode"] += time.perf_counter() - began
            peaks.setdefault("decode", peak_mib())
            audio_seconds += len(audio) / SAMPLE_RATE
            began = time.perf_counter()
            spans = speech_spans(audio, settings)
            timing["vad"] += time.perf_counter() - began
            peaks.setdefault("vad", peak_mib())
            began = time.perf_counter()
            said, overlapped = chunk_speech(audio, spans, diarization)
            timing["segmentation"] += time.perf_counter() - began
            peaks.setdefault("segmentation", peak_mib())
            began = time.perf_counter()
            found, embedded = window_embeddings(audio, said, diarization, offset)
            speech += [(offset + a, offset + b) for a, b in said]
            overlaps += [(offset + a, offset + b) for a, b in overlapped]
            windows += found
            vectors.append(embedded)
            timing["embeddings"] += time.perf_counter() - began
            peaks.setdefault("embeddings", peak_mib())
            began = time.perf_counter()
            segments += len(transcribe(model, audio, spans, settings))
            timing["asr"] += time.perf_counter() - began
            peaks.setdefault("asr", peak_mib())
        began = time.perf_counter()
        speakers = len({t.speaker for t in turns_from_windows(speech, windows, np.concatenate(vectors), diarization, overlaps)})
        timing["clustering"] += time.perf_counter() - began
        peaks["clustering"] = peak_mib()
    print(f"{speakers} speakers found (2 voices spoke)")
    print(f"{audio_seconds:.1f} s of audio, {segments} speech segments, chunk {settings.chunk:g} s, Whisper {settings.asr}, 1 thread")
    for stage, seconds in timing.items():
        print(f"  {stage:12s} {seconds:7.2f} s   real-time factor {seconds / audio_seconds:.4f}   peak after its first run {peaks.get(stage, 0):.0f} MiB")
    total = sum(timing.values())
    print(f"  {'total':12s} {total:7.2f} s   real-time factor {total / audio_seconds:.4f}")
    print(f"diarization (segmentation + embeddings + clustering) adds {(timing['segmentation'] + timing['embeddings'] + timing['clustering']) / audio_seconds:.4f}")
    print(f"peak resident memory {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
