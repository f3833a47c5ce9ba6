"""Real-time factor of each stage of ``merkit predict RECORDING`` on this machine (issue #18).

    python benchmarks/recording_rtf.py [--minutes 2] [--asr tiny] [--chunk 300]

Builds a recording of real synthetic speech (espeak-ng sentences of two voices with 1–3 s pauses,
joined by ffmpeg, 16 kHz wav) of about ``--minutes``, then times, over the whole file: decoding in
chunks, Silero VAD, speaker embeddings of the speech (CAM++ windows, ``--speakers auto``) and their
clustering (issue #35; each includes its one-time start: loading CAM++, importing scikit-learn), Whisper
transcription of the speech segments. Prints seconds of processing per
second of audio for each stage (below 1: faster than real time) and the peak resident memory.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--asr", default="tiny")
    parser.add_argument("--chunk", type=float, default=300.0)
    args = parser.parse_args()

    import numpy as np

    from merkit.diarization import DiarizationSettings, turns_from_windows, window_embeddings
    from merkit.recording import SAMPLE_RATE, RecordingSettings, chunks, load_asr, speech_spans, transcribe

    settings = RecordingSettings(asr=args.asr, chunk=args.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp), 60 * args.minutes)
        model = load_asr(settings)
        timing = {"decode": 0.0, "vad": 0.0, "embeddings": 0.0, "clustering": 0.0, "asr": 0.0}
        diarization, speech, windows, vectors = DiarizationSettings(), [], [], []
        audio_seconds, segments = 0.0, 0
        pieces = chunks(path, settings.chunk)
        while True:
            began = time.perf_counter()
            try:
                offset, audio = next(pieces)
            except StopIteration:
                break
            timing["decode"] += time.perf_counter() - began
            audio_seconds += len(audio) / SAMPLE_RATE
            began = time.perf_counter()
            spans = speech_spans(audio, settings)
            timing["vad"] += time.perf_counter() - began
            began = time.perf_counter()
            found, embedded = window_embeddings(audio, spans, diarization, offset)
            speech += [(offset + a, offset + b) for a, b in spans]
            windows += found
            vectors.append(embedded)
            timing["embeddings"] += time.perf_counter() - began
            began = time.perf_counter()
            segments += len(transcribe(model, audio, spans, settings))
            timing["asr"] += time.perf_counter() - began
        began = time.perf_counter()
        speakers = len({t.speaker for t in turns_from_windows(speech, windows, np.concatenate(vectors), diarization)})
        timing["clustering"] += time.perf_counter() - began
    print(f"{speakers} speakers found (2 voices spoke)")
    print(f"{audio_seconds:.1f} s of audio, {segments} speech segments, chunk {settings.chunk:g} s, Whisper {settings.asr}, 1 thread")
    for stage, seconds in timing.items():
        print(f"  {stage:10s} {seconds:7.2f} s   real-time factor {seconds / audio_seconds:.4f}")
    total = sum(timing.values())
    print(f"  {'total':10s} {total:7.2f} s   real-time factor {total / audio_seconds:.4f}")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
