"""What bounding the native caches costs (issue #36): a live turn's stages with merkit's bounds and with the libraries' own.

    OMP_NUM_THREADS=1 python benchmarks/native_caches_cost.py CKPT [--rounds 2]

Each round runs two processes one after the other, one thread each: one with :data:`merkit.devices.NATIVE_CACHES`
(as ``merkit live`` sets them before torch is imported), one with the libraries' defaults (oneDNN's and torch's
convolution caches at 1,024 entries, MKL's buffer cache on). Each times, as medians over RAVDESS test-actor clips
with a new length each call (as live turns come): the predictor on a sentence, on a conversation of 200 sentences,
on a sentence with its audio (a new file), Whisper's transcription of a turn (live's int8), and a turn's voice
embedding (CAM++, with the diarization extra). Seconds are comparable only within a run: the rounds interleave the
two settings so that a slower spell of the machine falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from live_latency import new_length, test_clips

WORDS = "kids are talking by the door dogs are sitting by the door".split()


def stages(checkpoint: Path, data: Path) -> dict[str, float]:
    """Milliseconds per call of each stage, medians, in this process."""
    import soundfile
    import torch

    import merkit
    from merkit.features.media import decode_audio
    from merkit.live import LiveSettings, voice_speakers
    from merkit.recording import load_asr, transcribe

    torch.set_num_threads(1)
    audio = [decode_audio(str(c), sample_rate=16_000) for c in test_clips(data, random.Random(0))[:30]]
    turn = lambda i: new_length(audio, i)  # noqa: E731
    sentence = lambda i: " ".join(WORDS[: 3 + i % 9])  # noqa: E731
    settings, result = LiveSettings(), {}
    with merkit.load(checkpoint, threads=1) as predictor, tempfile.TemporaryDirectory() as tmp:
        asr = load_asr(settings)

        def timed(name: str, call, calls: int = 30) -> None:
            for i in range(3):
                call(i)
            seconds = []
            for i in range(3, 3 + calls):
                began = time.perf_counter()
                call(i)
                seconds.append(time.perf_counter() - began)
            result[name] = 1000 * float(np.median(seconds))

        def with_audio(i: int) -> None:
            path = Path(tmp) / f"turn{i}.wav"
            soundfile.write(path, turn(i), 16_000, subtype="FLOAT")
            predictor.predict([{"text": "hello there", "audio": str(path)}])

        timed("predictor, a sentence", lambda i: predictor.predict([{"text": sentence(i)}]))
        timed("predictor, 200 sentences as context", lambda i: predictor.predict(
            {"dialogue_id": "d", "utterances": [{"text": sentence(k), "speaker": "a"} for k in range(200 + i)]}), calls=10)  # fmt: skip
        timed("predictor, a sentence and its audio", with_audio)
        timed("Whisper transcription (int8)", lambda i: transcribe(asr, turn(i), [(0.0, turn(i).size / 16_000)], settings), calls=15)
        speakers, missing = voice_speakers()
        if missing is None:
            timed("voice embedding (CAM++)", lambda i: speakers.embed(turn(i)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["bounded", "defaults"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:  # one process, its caches set by the parent's environment
        if args.child == "bounded":
            from merkit.devices import bound_native_caches

            bound_native_caches()
        print(json.dumps(stages(args.checkpoint, args.data)))
        return

    from merkit.devices import NATIVE_CACHES

    base = {k: v for k, v in os.environ.items() if k not in NATIVE_CACHES}
    environments = {"bounded": base, "defaults": {**base, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in environments}
    for _ in range(args.rounds):
        for name, env in environments.items():
            child = subprocess.run([sys.executable, __file__, str(args.checkpoint), "--data", str(args.data), "--child", name],
                                   env=env, capture_output=True, text=True, check=True)  # fmt: skip
            runs[name].append(json.loads(child.stdout.splitlines()[-1]))
    print(f"{'ms per call, median (each round)':44} {'bounded':>20} {'libraries defaults':>20}")
    for stage in runs["bounded"][0]:
        shown = {name: " / ".join(f"{r[stage]:.1f}" for r in rounds) for name, rounds in runs.items()}
        print(f"{stage:44} {shown['bounded']:>20} {shown['defaults']:>20}")


if __name__ == "__main__":
    main()
