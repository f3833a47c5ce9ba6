"""Whisper tiny.en's cost per live turn under the settings live could use (issue #36), one CPU thread.

    OMP_NUM_THREADS=1 python benchmarks/live_whisper_settings.py [--clips 24] [--lines 8]

Turns: RAVDESS clips of the test actors 19–24 (``--data``, shuffled with a fixed seed) and espeak-ng lines of
two voices, as in ``live_latency.py``'s stream. Each is transcribed as :func:`merkit.recording.transcribe` does
(beam 1, no VAD filter, no conditioning on earlier text) with compute type float32 or int8, and with the default
temperature fallback, without it (``temperature=0``), and also without timestamp tokens. Prints the seconds per
turn (mean, p50, p95, max) and how many transcripts equal float32's with the defaults.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from live_latency import LINES, test_clips

OPTIONS = {"defaults": {}, "temperature=0": {"temperature": 0.0}, "temperature=0, without_timestamps": {"temperature": 0.0, "without_timestamps": True}}


def turns(data: Path, clips: int, lines: int, folder: Path) -> list[np.ndarray]:
    from merkit.features.media import decode_audio

    found = test_clips(data, random.Random(1))
    audio = [decode_audio(str(p), sample_rate=16_000) for p in found[:clips]]
    for i, line in enumerate(LINES[:lines]):
        wav = folder / f"line{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us" if i % 2 else "en-gb+m3", "-s", "160", "-w", str(wav), line], check=True)
        audio.append(decode_audio(str(wav), sample_rate=16_000))
    return audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess")
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--lines", type=int, default=8)
    args = parser.parse_args()

    from merkit.recording import RecordingSettings, load_asr

    with tempfile.TemporaryDirectory() as tmp:
        audio = turns(args.data, args.clips, args.lines, Path(tmp))
    texts: dict[str, list[str]] = {}
    print(f"{len(audio)} turns, one thread\n\n| compute type | decoding | mean | p50 | p95 | max | same words as float32, defaults |\n|---|---|---|---|---|---|---|")
    for compute_type in ("float32", "int8"):
        model = load_asr(RecordingSettings(compute_type=compute_type))
        for name, options in OPTIONS.items():
            seconds, said = [], []
            list(model.transcribe(audio[0], language="en", beam_size=1, vad_filter=False)[0])  # warm up
            for samples in audio:
                began = time.perf_counter()
                parts, _ = model.transcribe(samples, language="en", beam_size=1, vad_filter=False, condition_on_previous_text=False, **options)
                said.append(" ".join(p.text.strip() for p in parts).strip())
                seconds.append(time.perf_counter() - began)
            texts[f"{compute_type} {name}"] = said
            same = sum(a == b for a, b in zip(said, texts["float32 defaults"]))
            print(f"| {compute_type} | {name} | {np.mean(seconds):.3f} | {np.median(seconds):.3f} | {np.quantile(seconds, 0.95):.3f} | "
                  f"{max(seconds):.3f} | {same} of {len(said)} |")  # fmt: skip


if __name__ == "__main__":
    main()
