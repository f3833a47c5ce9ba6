"""Text extraction throughput on this machine, and the cache speed-up on a re-run; audio and video throughput.

    python benchmarks/extraction.py [--utterances 1024] [--extractors minilm,mpnet] [--batch-size 32] [--threads N]
    python benchmarks/extraction.py --extractors "" --audio is10,egemaps,compare,whisper-tiny \
        --visual face-effnet,face-fer,face-landmarks [--clips 8] [--workers 1,2]
    python benchmarks/extraction.py --extractors "" --ravdess 24 [--threads 1] \
        [--audio is10,egemaps,compare,whisper-tiny,whisper-base]
    python benchmarks/extraction.py --extractors "" --images 100 [--threads 1] [--visual face-fer,...]

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
cache once per worker count (``--workers``; for Whisper the count is its encoder
threads), after a warm-up that loads the models and starts the worker processes (a long
extraction pays that once). Prints seconds of audio per second of wall time (real-time
factor) and sampled video frames analysed per second (default 2 per second of video,
decoding included), with the worker count.

Seconds per real clip (``--ravdess N``): N RAVDESS speech recordings (16 kHz FLAC,
2.9–5.3 s; one per actor, actor k's k-th file in name order, so emotions and lengths vary)
from ``$MERKIT_SHARED_DATA/ravdess`` (default ``../shared/data``). Every audio extractor of
``--audio`` (default: all five) runs ``run_extraction`` without cache, one process, after a
warm-up clip that loads the model; Whisper twice, with ``pad_to_window`` true (30-s window,
as trained) and false (the clip's own frames). ``--threads`` sets torch's threads and
Whisper's encoder threads (default: all cores). Prints a Markdown table of seconds per
clip and the ratio to ``is10`` measured in the same run.
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
    parser.add_argument("--ravdess", type=int, default=0, help="time the audio extractors on this many real RAVDESS clips")
    parser.add_argument("--images", type=int, default=0, help="time the visual extractors on this many CK+ crops and photographs")
    args = parser.parse_args(argv)
    if args.ravdess:
        ravdess_benchmark(args)
    elif args.images:
        images_benchmark(args)
    elif args.audio or args.visual:
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
                settings = {"threads": workers} if name.startswith("whisper") else {"workers": workers}
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


RAVDESS_AUDIO = ("is10", "egemaps", "compare", "whisper-tiny", "whisper-base")


def ravdess_corpus(root: Path, clips: int):
    """``clips`` RAVDESS recordings, one per actor in turn (actor k's k-th file in name order)."""
    import json

    from merkit.data import read_data

    actors = sorted((SHARED / "ravdess" / "audio").glob("Actor_*"))
    if not actors:
        raise SystemExit(f"no RAVDESS audio under {SHARED / 'ravdess' / 'audio'} (set MERKIT_SHARED_DATA)")
    rows = []
    for index in range(clips):
        files = sorted(actors[index % len(actors)].glob("*.flac"))
        path = files[(index + index // len(actors)) % len(files)]
        rows.append({"dialogue_id": path.parent.name, "utterance_id": path.stem, "audio": str(path), "label": "neutral"})
    (root / "ravdess.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    return read_data(root / "ravdess.jsonl").corpus


def ravdess_benchmark(args) -> None:
    import torch

    from merkit.features import get_extractor
    from merkit.features.extract import run_extraction
    from merkit.features.media import decode_audio

    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(filter(None, args.audio.split(","))) or list(RAVDESS_AUDIO)
    runs = [(n, {"pad_to_window": pad}) for n in names for pad in ((True, False) if n.startswith("whisper") else (None,))]
    with tempfile.TemporaryDirectory() as folder:
        corpus = ravdess_corpus(Path(folder), args.ravdess)
        utterances = list(corpus.utterances())
        lengths = [decode_audio(u.media["audio"], sample_rate=16000).size / 16000 for u in utterances]
        actors = len({Path(u.media["audio"]).parent.name for u in utterances})
        print(f"{len(utterances)} RAVDESS clips from {actors} actors, {sum(lengths):.1f} s of speech "
              f"({min(lengths):.1f}–{max(lengths):.1f} s); torch {torch.get_num_threads()} threads, OMP_NUM_THREADS="
              f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        timed = []
        for name, settings in runs:
            settings = {k: v for k, v in settings.items() if v is not None}
            if name.startswith("whisper"):
                settings["threads"] = args.threads or 0
            extractor = get_extractor(name, **settings)
            extractor.encode([extractor.plan(corpus)[0].payload])  # warm-up: the model is loaded (and assembled) once
            started = time.perf_counter()
            result = run_extraction(corpus, extractor, use_cache=False, batch_size=len(utterances), progress=False, log=None)
            wall = time.perf_counter() - started
            extractor.close()
            assert not result.failures, result.failures
            shown = f"pad_to_window={str(settings['pad_to_window']).lower()}" if "pad_to_window" in settings else "—"
            timed.append((name, shown, extractor.output_dim, wall / len(utterances), sum(lengths) / wall))
            print(f"  {name} ({shown}): {wall:.1f} s", flush=True)
        base = next((t[3] for t in timed if t[0] == "is10"), None)
        print()
        print("| extractor | setting | dim | s / clip | × is10 | audio s / s |")
        print("|---|---|---|---|---|---|")
        for name, shown, dim, per_clip, realtime in timed:
            ratio = f"{per_clip / base:.1f}" if base else ""
            print(f"| `{name}` | {shown} | {dim} | {per_clip:.3f} | {ratio} | {realtime:.1f} |")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        print()


IMAGE_VISUAL = ("face-fer", "face-fer-conv", "face-effnet", "face-landmarks")


def image_corpora(root: Path, count: int):
    """Two corpora of ``count`` one-image utterances: CK+ crops and astronaut photographs."""
    import json

    import numpy as np
    from PIL import Image
    from skimage import data as skimage_data

    from merkit.data import read_data

    crops = sorted((SHARED / "ckplus" / "images").glob("*/*.png"))
    if not crops:
        raise SystemExit(f"no CK+ crops under {SHARED / 'ckplus' / 'images'} (set MERKIT_SHARED_DATA)")
    photo = skimage_data.astronaut()
    photos = []
    for index in range(count):
        path = root / f"photo{index}.png"
        Image.fromarray(np.roll(photo, index, axis=1)).save(path)  # shifted by `index` pixels: distinct inputs
        photos.append(path)
    corpora = {}
    for name, paths in (("CK+ 48×48", crops[:: max(1, len(crops) // count)][:count]), ("photo 512×512", photos)):
        rows = [{"dialogue_id": f"i{k}", "image": str(p), "label": "neutral"} for k, p in enumerate(paths)]
        table = root / f"{name.split()[0]}.jsonl"
        table.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
        corpora[name] = read_data(table).corpus
    return corpora


def images_benchmark(args) -> None:
    import torch

    from merkit.features import get_extractor
    from merkit.features.extract import run_extraction
    from merkit.features.media import read_image

    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(filter(None, args.visual.split(","))) or list(IMAGE_VISUAL)
    with tempfile.TemporaryDirectory() as folder:
        corpora = image_corpora(Path(folder), args.images)
        print(f"{args.images} images per input kind; torch {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        rows = []
        for kind, corpus in corpora.items():
            paths = [u.media["image"] for u in corpus.utterances()]
            started = time.perf_counter()
            for path in paths:
                read_image(path)
            decode = len(paths) / (time.perf_counter() - started)
            for name in names:
                rates = {}
                for detection in ("on", "off"):
                    if detection == "off" and name == "face-landmarks":
                        continue
                    extractor = get_extractor(name, detection=detection)
                    extractor.encode([extractor.plan(corpus)[0].payload])  # warm-up: networks and Face Mesh loaded once
                    started = time.perf_counter()
                    result = run_extraction(corpus, extractor, use_cache=False, progress=False, log=None)
                    rates[detection] = result.computed / (time.perf_counter() - started)
                    assert not result.failures and result.computed == len(paths), (result.failures, result.computed)
                    print(f"  {kind} {name} detection={detection}: {rates[detection]:.1f} images/s "
                          f"({result.masked} without a face)", flush=True)  # fmt: skip
                rows.append((kind, name, rates, decode))
        print()
        print("| images | extractor | detection on (img/s) | off (img/s) | off / on | decoding only (img/s) |")
        print("|---|---|---|---|---|---|")
        for kind, name, rates, decode in rows:
            off = rates.get("off")
            shown = (f"{off:.1f}", f"{off / rates['on']:.1f}") if off else ("—", "—")
            print(f"| {kind} | `{name}` | {rates['on']:.1f} | {shown[0]} | {shown[1]} | {decode:.0f} |")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
