"""Which stage of a live turn grows native memory (issue #36): the RSS after ``malloc_trim(0)`` over repeated calls.

    OMP_NUM_THREADS=1 python benchmarks/live_memory_stages.py CKPT

Each stage of a turn runs 10 times to warm up, then 150 times on RAVDESS test-actor clips (40 of them, in turn);
the slope of the trimmed RSS is the memory each call leaves behind: Whisper's transcription (live's int8),
writing the turn's audio file, the checkpoint's predictor on one turn with a new audio file each call (as live
gives it), on one turn with the same file each call, and the turn's voice embedding (CAM++, as live assigns speakers;
with the diarization extra). The native caches are bounded first, as ``merkit live`` does; set
``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, ``LRU_CACHE_CAPACITY`` or ``MKL_DISABLE_FAST_MM`` in the environment to measure
a library's own default (:data:`merkit.devices.NATIVE_CACHES`).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from live_latency import new_length, test_clips
from live_memory import trimmer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess")
    parser.add_argument("--calls", type=int, default=150)
    args = parser.parse_args()

    from merkit.devices import bound_native_caches

    bound_native_caches()  # as `merkit live` does, before torch is imported
    import psutil
    import soundfile
    import torch

    import merkit
    from merkit.features.media import decode_audio
    from merkit.live import LiveSettings, voice_speakers
    from merkit.recording import load_asr, transcribe

    torch.set_num_threads(1)
    trim, process = trimmer(), psutil.Process()

    def rss() -> float:
        trim(0)
        return process.memory_info().rss / 2**20

    clips = test_clips(args.data, random.Random(0))
    audio = [decode_audio(str(c), sample_rate=16_000) for c in clips[:40]]
    settings = LiveSettings()
    with merkit.load(args.checkpoint, threads=1) as predictor, tempfile.TemporaryDirectory() as tmp:
        asr = load_asr(settings)
        predictor.predict([{"text": "warming up"}])

        def phase(name, call) -> None:
            for i in range(10):
                call(i)
            calls, memory = [], []
            for i in range(args.calls):
                call(i)
                if i % 5 == 0:
                    calls.append(i)
                    memory.append(rss())
            print(f"{name}: {1024 * np.polyfit(calls, memory, 1)[0]:.1f} kB per call ({memory[0]:.1f} → {memory[-1]:.1f} MB)", flush=True)

        def written(i: int) -> Path:
            path = Path(tmp) / f"turn{i}-{time.time_ns()}.wav"
            soundfile.write(path, audio[i % len(audio)], 16_000, subtype="FLOAT")
            return path

        soundfile.write(Path(tmp) / "same.wav", audio[0], 16_000, subtype="FLOAT")
        phase("Whisper transcription", lambda i: transcribe(asr, audio[i % len(audio)], [(0.0, audio[i % len(audio)].size / 16_000)], settings))
        phase("turn audio file written", written)
        phase("predictor on one turn, a new audio file", lambda i: predictor.predict([{"text": "hello there", "audio": str(written(i))}]))
        phase("predictor on one turn, the same audio file", lambda i: predictor.predict([{"text": "hello there", "audio": str(Path(tmp) / "same.wav")}]))
        speakers, missing = voice_speakers()
        if missing is None:
            phase("voice embedding (CAM++), a new turn", lambda i: speakers.embed(new_length(audio, i)))


if __name__ == "__main__":
    main()
