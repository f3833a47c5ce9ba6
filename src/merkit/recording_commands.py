"""The command line's recording words (issue #35): ``merkit diarize``, ``--speakers auto|none|FILE.rttm`` and
``merkit predict CKPT FOLDER/ --out DIR/`` (many recordings).

A folder run writes one timeline per recording, ``DIR/<path in the folder>.json``, which records the recording's
SHA-256: a re-run (after an interruption, or with more files) skips every file whose output holds its current
checksum. ``--shard i/n`` takes files i, i+n, i+2n, … (0 ≤ i < n, in sorted path order, as ``merkit extract``'s), so n machines (a SLURM or
Kubernetes array job) share a folder without talking to each other. A file that fails is named with its error
in ``DIR/failures.json`` (shard-suffixed) and on stderr, the others go on, and the run exits 1. At the end the
timelines of this run's files are merged into ``DIR/timelines.csv`` (one row per segment, the file first) and
``DIR/speakers.csv`` (one row per speaker of each file: speaking time, turns, emotion shares).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from merkit.cli_options import QuietOption, ThreadsOption, set_torch_threads
from merkit.diarization import DiarizationSettings, to_rttm
from merkit.errors import MerkitError
from merkit.io import atomic_write_json, atomic_write_text, file_sha256
from merkit.progress import progress_bar

if TYPE_CHECKING:
    from merkit.inference import Predictor
    from merkit.recording import RecordingSettings, Timeline

NumSpeakersOption = Annotated[Optional[int], typer.Option(help="Recording input: the number of speakers, when known (else found by clustering).", min=1)]
MinSpeakersOption = Annotated[Optional[int], typer.Option(help="Recording input: at least this many speakers.", min=1)]
MaxSpeakersOption = Annotated[Optional[int], typer.Option(help="Recording input: at most this many speakers.", min=1)]


def media_suffixes() -> tuple[str, ...]:
    from merkit.inference import MEDIA_SUFFIXES

    return tuple(MEDIA_SUFFIXES["audio"]) + tuple(MEDIA_SUFFIXES["video"])


def parse_speakers(value: str | None) -> str | Path:
    """``--speakers``: ``auto``, ``none``, or an RTTM file; left out, ``auto`` where the diarization extra is
    installed (else one unknown speaker, as before it existed)."""
    from merkit.diarization import available

    if value is None:
        return "auto" if available() else "none"
    if value in ("auto", "none"):
        return value
    path = Path(value)
    if not path.is_file():
        raise MerkitError("no such RTTM file (--speakers takes auto, none or an RTTM file)", path=path)
    return path


def diarization_settings(num_speakers: int | None, min_speakers: int | None, max_speakers: int | None) -> DiarizationSettings:
    """merkit's diarization settings with the user's speaker counts."""
    if num_speakers is not None and (min_speakers is not None or max_speakers is not None):
        raise MerkitError("give --num-speakers, or --min-speakers/--max-speakers, not both")
    return DiarizationSettings(num_speakers=num_speakers, min_speakers=min_speakers or 1, max_speakers=max_speakers)


def is_recording_folder(path: Path) -> bool:
    """A folder of recordings: audio or video files, no transcript, and no corpus merkit reads (a folder of media
    with one transcript is one conversation; a RAVDESS folder is a corpus of clips)."""
    from merkit.data.formats import Source, detect_format
    from merkit.inference import TRANSCRIPT_SUFFIXES

    if not path.is_dir() or any(p.is_file() and p.suffix.lower() in TRANSCRIPT_SUFFIXES for p in path.iterdir()):
        return False
    if not any(p.is_file() and p.suffix.lower() in media_suffixes() for p in path.rglob("*")):
        return False
    try:
        detect_format(Source(path))
    except MerkitError:
        return True
    return False


def predict_folder(
    predictor: Predictor, folder: Path, out: Path | None, settings: RecordingSettings, *, speakers: str | Path,
    diarization: DiarizationSettings, shard: str | None = None, progress: bool = True, log: Callable[[str], None] = lambda line: None,
) -> int:  # fmt: skip
    """Timelines of every recording under ``folder`` into ``out``; the exit code (1 if any file failed)."""
    from merkit.recording import predict_recording

    if out is None:
        raise MerkitError("a folder of recordings needs --out DIR/ (one timeline per recording is written there)", path=folder)
    if out.exists() and not out.is_dir():
        raise MerkitError("--out must be a folder for a folder of recordings", path=out)
    from merkit.features.extract import parse_shard

    index, count = parse_shard(shard) or (0, 1)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in media_suffixes())
    mine = files[index::count]
    suffix = "" if count == 1 else f"-shard{index}of{count}"
    failures: dict[str, str] = {}
    done = skipped = 0
    bar = progress_bar(len(mine), "recordings", enabled=progress, unit="file")
    try:
        for path in mine:
            relative = path.relative_to(folder).as_posix()
            target = out / f"{relative}.json"
            try:
                checksum = file_sha256(path)
                if _finished(target, checksum):
                    skipped += 1
                else:
                    timeline = predict_recording(predictor, path, settings, speakers=speakers, diarization=diarization, log=log)
                    timeline.recording, timeline.sha256 = relative, checksum
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(target, timeline.model_dump_json(indent=2) + "\n")
                    done += 1
            except Exception as exc:  # noqa: BLE001 — one bad file must not stop the others; each is named below
                failures[relative] = str(exc) if isinstance(exc, MerkitError) else f"{type(exc).__name__}: {exc}"
                log(f"failed: {relative}: {failures[relative]}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    out.mkdir(parents=True, exist_ok=True)
    merged, per_speaker = out / f"timelines{suffix}.csv", out / f"speakers{suffix}.csv"
    finished = [p.relative_to(folder).as_posix() for p in mine]
    segments, speakers_csv = _merged_csv(out, [name for name in finished if name not in failures])
    atomic_write_text(merged, segments)
    atomic_write_text(per_speaker, speakers_csv)
    report = out / f"failures{suffix}.json"
    if failures:
        atomic_write_json(report, failures)
    elif report.exists():
        report.unlink()  # an earlier run's failures were redone
    typer.echo(f"{done} recording(s) predicted, {skipped} already done, {len(failures)} failed (shard {index}/{count} of {len(files)} file(s)); "
               f"merged timelines in {merged}, speakers in {per_speaker}" + (f"; failures in {report}" if failures else ""), err=True)  # fmt: skip
    for name, message in failures.items():
        typer.echo(f"failed: {name}: {message}", err=True)
    return 1 if failures else 0


def _finished(target: Path, checksum: str) -> bool:
    """Whether ``target`` is a timeline of the recording with this SHA-256 (a torn or foreign file is redone)."""
    if not target.is_file():
        return False
    try:
        return json.loads(target.read_text("utf-8")).get("sha256") == checksum
    except (OSError, ValueError, AttributeError):
        return False


def _merged_csv(out: Path, names: list[str]) -> tuple[str, str]:
    """The timelines of ``names`` as two CSVs (the recording's path first): every segment, and every speaker's summary."""
    from merkit.recording import Timeline

    tables = []
    for table in ("to_csv", "summary_csv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for index, name in enumerate(names):
            timeline = Timeline.model_validate_json((out / f"{name}.json").read_text("utf-8"))
            rows = list(csv.reader(io.StringIO(getattr(timeline, table)())))
            if index == 0:
                writer.writerow(["recording", *rows[0]])
            writer.writerows([name, *row] for row in rows[1:])
        tables.append(buffer.getvalue())
    return tables[0], tables[1]


def speakers_csv(out: Path) -> Path:
    """Where ``--csv --out FILE.csv`` puts a recording's per-speaker summary: ``FILE.speakers.csv`` beside it."""
    return out.with_suffix(".speakers.csv") if out.suffix.lower() == ".csv" else out.with_name(out.name + ".speakers.csv")


def recording_files(result: Any, *, as_csv: bool, out: Path | None, srt: Path | None, timeline: Path | None) -> dict[Path, str]:
    """The files a prediction writes besides ``--out``, each text made before any is written (so a failure in one
    leaves none behind): ``--srt``, ``--timeline`` and, for a recording's ``--csv --out``, its speakers' table."""
    from merkit.recording import Timeline

    files = {}
    if srt is not None:
        files[srt] = result.to_srt()
    if timeline is not None:
        files[timeline] = result.to_html()
    if as_csv and out is not None and isinstance(result, Timeline):
        files[speakers_csv(out)] = result.summary_csv()
    return files


def diarize(
    recording: Annotated[Path, typer.Argument(help="An audio or video recording.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the RTTM (atomically) instead of printing it.")] = None,
    num_speakers: NumSpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Who spoke when, as RTTM (the format every diarization tool reads): voice activity, speaker embeddings, clustering."""
    from merkit.recording import diarize_recording

    set_torch_threads(threads)
    if recording.is_file() and recording.suffix.lower() not in media_suffixes():
        raise MerkitError(f"not an audio or video file ({', '.join(media_suffixes())})", path=recording)
    turns = diarize_recording(recording, diarization=diarization_settings(num_speakers, min_speakers, max_speakers), progress=not quiet)
    text = to_rttm(turns, recording.stem)
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    typer.echo(f"wrote {out}: {len(turns)} turn(s) of {len({t.speaker for t in turns})} speaker(s)", err=True)
