"""Text extraction throughput on this machine, and the cache speed-up on a re-run; audio and video throughput.

    python benchmarks/extraction.py [--utterances 1024] [--extractors minilm,mpnet] [--batch-size 32] [--threads N]
    python benchmarks/extraction.py --extractors "" --audio is10,egemaps,compare,whisper-tiny \
        --visual face-effnet,face-fer,face-landmarks [--clips 8] [--workers 1,2]

For each text extractor, on the same utterances (the first N of MELD when ../shared/data is
there, else the packaged example conversations repeated with numbered variants):

* baseline: ``SentenceTransformer.encode`` of the plain texts, measured in the same run;
* merkit, cold: ``run_extraction`` into an empty cache (model calls only, the rate the
  progress bar shows) and its whole wall time (tokenising, planning, writing the cache);
* merkit, re-run: the same extraction again, served from the content-hash cache.

Prints utterances per second, merkit's rate as a ratio of the baseline, and the re-run
speed-up (cold wall time / re-run wall time). The load average is printed too: other
processes on the machine slow every figure, the ratios much less.

Audio and video (``--audio``, ``--visual``; needs espeak-ng and ffmpeg): ``--clips`` spoken
sentences (espeak-ng, 22.05 kHz wav) and as many 1280×720, 25 fps mp4 files of a face
photograph with that speech as sound track; each extractor runs ``run_extraction`` without
cache once per worker count (``--workers``; for whisper-tiny the count is its encoder
threads), after a warm-up that loads the models and starts the worker processes (a long
extraction pays that once). Prints seconds of audio per second of wall time (real-time
factor) and sampled video frames analysed per second (default 2 per second of video,
decoding included), with the worker count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MERKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def small_corpus(count: int):
    from merkit.data import read_data
    from merkit.data.corpus import Dialogue, build_corpus, build_utterance

    if (SHARED / "meld").exists():
        corpus = read_data(SHARED / "meld").corpus
        source = "MELD"
    else:
        corpus = read_data(REPO / "src" / "merkit" / "examples" / "conversations.jsonl").corpus
        source = "example conversations"
    dialogues, total, copy = [], 0, 0
    while total < count:
        for dialogue in corpus.dialogues:
            turns = tuple(
                build_utterance(id=f"{copy}-{u.id}", speaker=u.speaker, text=u.text if copy == 0 else f"{u.text} ({copy})")
                for u in dialogue.utterances[: count - total]
            )
            if not turns:
                break
            dialogues.append(Dialogue(id=f"{copy}-{dialogue.id}", utterances=turns))
            total += len(turns)
            if total >= count:
                break
        copy += 1
    return build_corpus(name="bench", labels=corpus.labels, dialogues=tuple(dialogues)), source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=1024)
    parser.add_argument("--extractors", default="minilm,mpnet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch CPU threads for the text runs (default: torch's choice)")
    parser.add_argument("--audio", default="", help="audio extractors to time, e.g. is10,egemaps,compare,whisper-tiny")
    parser.add_argument("--visual", default="", help="visual extractors to time, e.g. face-effnet,face-fer,face-landmarks")
    parser.add_argument("--clips", type=int, default=8, help="spoken sentences / face videos made for the media runs")
    parser.add_argument("--workers", default="1,2", help="worker counts to time the media extractors with")
    args = parser.parse_args(argv)
    if args.audio or args.visual:
        media_benchmark(args)
    if not args.extractors:
        return
    os.environ["HF_HUB_OFFLINE"] = "1"  # this process only: the models load from local folders
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from merkit.features import get_extractor
    from merkit.features.extract import run_extraction

    corpus, source = small_corpus(args.utterances)
    texts = [u.text for u in corpus.utterances()]
    print(f"{len(texts)} utterances from {source}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    rows = []
    for name in args.extractors.split(","):
        extractor = get_extractor(name)
        from sentence_transformers import SentenceTransformer

        baseline_model = SentenceTransformer(str(extractor.folder), device="cpu")
        baseline_model.encode(texts[:8])  # warm-up
        started = time.perf_counter()
        baseline_model.encode(texts, batch_size=args.batch_size)
        baseline = len(texts) / (time.perf_counter() - started)
        del baseline_model
        with tempfile.TemporaryDirectory() as cache:
            extractor.load_model()
            extractor.encode([extractor.plan(corpus)[0].payload])  # warm-up, like the baseline's
            started = time.perf_counter()
            cold = run_extraction(corpus, extractor, cache_dir=cache, batch_size=args.batch_size, progress=False, log=None)
            cold_wall = time.perf_counter() - started
            again = get_extractor(name)
            started = time.perf_counter()
            warm = run_extraction(corpus, again, cache_dir=cache, batch_size=args.batch_size, progress=False, log=None)
            warm_wall = time.perf_counter() - started
            assert warm.computed == 0 and again.calls == 0
            assert (warm.features.values == cold.features.values).all()
        rows.append((name, extractor.output_dim, baseline, cold.rate, len(texts) / cold_wall, warm_wall, cold_wall / warm_wall))
        extractor.close()
    print()
    print("| extractor | dim | sentence-transformers utt/s | merkit utt/s (model) | ratio | merkit utt/s (wall) | re-run s | cache speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, dim, baseline, rate, wall_rate, warm_wall, speedup in rows:
        print(f"| {name} | {dim} | {baseline:.0f} | {rate:.0f} | {rate / baseline:.2f} | {wall_rate:.0f} | {warm_wall:.2f} | {speedup:.0f}× |")
    if len(rows) > 1:
        first = rows[0]
        for row in rows[1:]:
            print(f"{row[0]} vs {first[0]}: {row[3] / first[3]:.2f}× the rate (model calls)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


SENTENCES = (
    "I cannot believe you did that to me, after everything we went through together.",
    "Well, that is just wonderful news, congratulations to both of you!",
    "Please stop talking for a second and listen to what I am trying to say.",
    "I am so tired of waiting for the bus every single morning in the rain.",
    "Do you really think they will let us in without a ticket?",
    "Oh no, I forgot to call my mother back, she is going to be furious.",
    "This is the happiest day of my life and nothing can spoil it.",
    "Honestly, I do not care what they think about the new apartment.",
)


def media_corpus(root: Path, clips: int):
    """``clips`` utterances, each with a spoken wav and a 1280×720 face video carrying that speech."""
    import json
    import shutil
    import subprocess

    from PIL import Image
    from skimage import data

    from merkit.data import read_data

    for program in ("espeak-ng", "ffmpeg"):
        if shutil.which(program) is None:
            raise SystemExit(f"the media benchmark needs {program} (make system-deps installs it)")
    Image.fromarray(data.astronaut()).save(root / "face.png")
    rows = []
    for index in range(clips):
        wav, mp4 = root / f"speech{index}.wav", root / f"face{index}.mp4"
        subprocess.run(["espeak-ng", "-w", str(wav), SENTENCES[index % len(SENTENCES)]], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "25", "-i", str(root / "face.png"), "-i", str(wav),
                        "-vf", "pad=1280:720:384:104", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-shortest", str(mp4)], check=True)  # fmt: skip
        rows.append({"dialogue_id": f"d{index // 4}", "utterance_id": str(index), "audio": wav.name, "video": mp4.name, "label": "joy"})
    (root / "media.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    return read_data(root / "media.jsonl").corpus


def media_benchmark(args) -> None:
    from merkit.features import get_extractor
    from merkit.features.extract import run_extraction
    from merkit.features.media import decode_audio, sample_frames

    with tempfile.TemporaryDirectory() as folder:
        corpus = media_corpus(Path(folder), args.clips)
        utterances = list(corpus.utterances())
        seconds = sum(decode_audio(u.media["audio"]).size / 22050 for u in utterances)
        print(f"{len(utterances)} clips, {seconds:.1f} s of speech; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
        print()
        print("| extractor | modality | dim | workers | audio s / s | video frames / s | wall s |")
        print("|---|---|---|---|---|---|---|")
        names = [(n, "audio") for n in filter(None, args.audio.split(","))] + [(n, "visual") for n in filter(None, args.visual.split(","))]
        for name, modality in names:
            for workers in (int(w) for w in args.workers.split(",")):
                settings = {"threads": workers} if name == "whisper-tiny" else {"workers": workers}
                extractor = get_extractor(name, **settings)
                extractor.encode([item.payload for item in extractor.plan(corpus)[: max(2, workers)]])  # warm-up: weights, workers
                started = time.perf_counter()
                result = run_extraction(corpus, extractor, use_cache=False, batch_size=args.clips, progress=False, log=None)
                wall = time.perf_counter() - started
                extractor.close()
                assert not result.failures, result.failures
                if modality == "audio":
                    rate = f"| {seconds / wall:.1f} | |"
                else:
                    fps = extractor.settings.fps
                    frames = sum(len(sample_frames(u.media["video"], fps=fps, max_frames=extractor.settings.max_frames)) for u in utterances)
                    rate = f"| | {frames / wall:.1f} |"
                print(f"| {name} | {modality} | {extractor.output_dim} | {workers} {rate} {wall:.1f} |", flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        print()


if __name__ == "__main__":
    sys.exit(main())
