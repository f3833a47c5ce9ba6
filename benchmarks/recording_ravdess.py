"""The emotion track of a recording made of real RAVDESS clips, against the clips' labels (issue #18).

    python benchmarks/recording_ravdess.py [--data ../shared/data/ravdess] [--out runs/recording-ravdess] [--seeds 0,1,2]
        [--trim-db 40]

Four emotions (neutral, happy, sad, angry), speaker-independent: an MLP on eGeMAPS audio features is
trained on the clips of actors 1–16 (selected on 17–18); the RBF-SVM baseline on the same features, C
chosen on 17–18. Then, for each test actor 19–24, the actor's clips in a shuffled order with 1 s
pauses become one recording; `merkit.recording.predict_recording` (Silero VAD, Whisper tiny.en, eGeMAPS of
each segment's span, the model) gives its emotion track, compared with the clips' labels: segments
found per clip, track accuracy and macro F1, and the same model on the clips themselves (what the
track would be with perfect segmentation). ``--trim-db`` extracts with the eGeMAPS setting ``trim_db``
(training clips and segments both cut to their voiced extent). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media_helpers import RAVDESS_EMOTIONS, join_clips, ravdess_clips  # noqa: E402

def merkit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "merkit", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ravdess"))
    parser.add_argument("--out", type=Path, default=Path("runs/recording-ravdess"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--trim-db", type=float, default=None)
    args = parser.parse_args()
    from sklearn.metrics import accuracy_score, f1_score

    import merkit as api
    from merkit.recording import RecordingSettings, predict_recording

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, label, actor in ravdess_clips(args.data, range(1, 25)):
        split = "test" if actor > 18 else "valid" if actor > 16 else "train"
        rows.append({"dialogue_id": path.stem, "speaker": f"Actor_{actor:02d}", "label": label, "split": split, "audio": str(path.resolve())})
    corpus = args.out / "clips.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store, run, svm = args.out / "store", args.out / "mlp", args.out / "svm"
    trim = [] if args.trim_db is None else ["--set", f"trim_db={args.trim_db:g}"]
    merkit("extract", str(corpus), "-m", "audio", "-e", "egemaps", *trim, "--out", str(store), "-q")
    merkit("train", str(store), "--model", "mlp", "--modalities", "audio", "--seeds", args.seeds, "--out", str(run), "-q")
    merkit("baseline", str(store), "--modalities", "audio", "--out", str(svm))
    svm_test = json.loads((svm / "results.json").read_text())

    names = list(RAVDESS_EMOTIONS.values())
    table = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        truth, track, on_clips, found, started, audio_seconds = [], [], [], 0, time.perf_counter(), 0.0
        with api.load(run / f"seed{seed}" / "best", threads=1) as predictor:
            for actor in range(19, 25):
                mine = ravdess_clips(args.data, [actor])
                random.Random(actor).shuffle(mine)
                recording = args.out / f"actor{actor}.wav"
                spans = join_clips([p for p, _, _ in mine], recording, pause=1.0)
                audio_seconds += spans[-1][1] + 1.0
                timeline = predict_recording(predictor, recording, RecordingSettings(), cache=True)
                direct = predictor.predict([{"speaker": "A", "audio": str(p)} for p, _, _ in mine])
                for (start, end), (_, label, _), clip_prediction in zip(spans, mine, direct.utterances, strict=True):
                    inside = [s for s in timeline.segments if start <= (s.start + s.end) / 2 <= end]
                    found += len(inside) == 1
                    truth.append(label)
                    track.append(inside[0].label if len(inside) == 1 else "missed")
                    on_clips.append(clip_prediction.label)
        seconds = time.perf_counter() - started
        table.append({
            "seed": seed, "clips": len(truth), "one_segment": found, "track_acc": accuracy_score(truth, track),
            "track_f1": f1_score(truth, track, labels=names, average="macro", zero_division=0),
            "clip_acc": accuracy_score(truth, on_clips), "clip_f1": f1_score(truth, on_clips, labels=names, average="macro", zero_division=0),
            "agree": float(np.mean([a == b for a, b in zip(track, on_clips)])), "rtf": seconds / audio_seconds,
        })  # fmt: skip
    print("| seed | clips | one segment per clip | track accuracy | track macro F1 | model on the clips: acc / macro F1 | track = clip prediction | RTF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['seed']} | {r['clips']} | {r['one_segment']} | {100 * r['track_acc']:.2f} | {100 * r['track_f1']:.2f} | "
              f"{100 * r['clip_acc']:.2f} / {100 * r['clip_f1']:.2f} | {100 * r['agree']:.1f} % | {r['rtf']:.3f} |")  # fmt: skip
    test = svm_test["summary"]["test"]
    print(f"\nRBF-SVM (eGeMAPS, C on valid) on the test clips: accuracy {100 * test['accuracy']['mean']:.2f}, "
          f"macro F1 {100 * test['macro_f1']['mean']:.2f}")  # fmt: skip
    (args.out / "table.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
