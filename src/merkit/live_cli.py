"""``merkit live``: a file played at real-time pace, or the microphone, through a :class:`~merkit.live.LiveSession`;
each turn printed as it ends (a growing table, or JSON lines with ``--json``)."""

from __future__ import annotations

import queue
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from merkit.cli_options import DeviceOption, QuietOption, ThreadsOption, set_torch_threads
from merkit.devices import bound_native_caches
from merkit.errors import MerkitError

FRAME = 1600  # samples per frame fed to the session (0.1 s at 16 kHz), as a microphone or a WebSocket delivers them
SPEAKERS_HELP = (
    "Recording input: auto (diarize; the default where the diarization extra is installed), none (one unknown speaker), "
    "or an RTTM file. Live, auto gives each turn the nearest voice heard so far; an RTTM file is for `merkit predict`."
)
MIC_EXTRA = "pip install 'merkit[live]' (sounddevice), and the system's PortAudio library (e.g. apt install libportaudio2)"


def file_frames(path: Path) -> Iterator[np.ndarray]:
    """The file's 16 kHz mono samples, decoded a minute at a time, in frames of :data:`FRAME`."""
    from merkit.recording import chunks

    if not path.is_file():
        raise MerkitError("no such file", path=path)
    for _, audio in chunks(path, 60.0):
        for at in range(0, audio.size, FRAME):
            yield audio[at : at + FRAME]


def paced(frames: Iterator[np.ndarray], pace: bool, clock: Callable[[], float]) -> Iterator[tuple[np.ndarray, float]]:
    """Each frame with the time it arrives: at real-time pace when ``pace`` (a late frame, behind a slow turn,
    keeps the time it would have arrived, so latencies count the backlog), else as soon as read."""
    from merkit.recording import SAMPLE_RATE

    began, played = clock(), 0
    for frame in frames:
        played += frame.size
        if not pace:
            yield frame, clock()
            continue
        due = began + played / SAMPLE_RATE
        time.sleep(max(0.0, due - clock()))
        yield frame, due


def _microphone(clock: Callable[[], float]) -> Iterator[tuple[np.ndarray, float]]:
    """Frames from the default capture device until Ctrl+C."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise MerkitError(f"--mic needs sounddevice and PortAudio ({exc}): {MIC_EXTRA}") from None
    try:
        sounddevice.query_devices(kind="input")
    except Exception as exc:  # PortAudioError or ValueError: no capture device
        raise MerkitError(f"--mic found no capture device ({exc}); play a file with --input instead") from None
    arrived: queue.SimpleQueue[tuple[np.ndarray, float]] = queue.SimpleQueue()

    def heard(data: Any, frames: int, moment: Any, status: Any) -> None:
        arrived.put((np.array(data[:, 0], dtype=np.float32), clock()))

    with sounddevice.InputStream(samplerate=16_000, channels=1, dtype="float32", blocksize=FRAME, callback=heard):
        while True:
            yield arrived.get()


class _Table:
    """The turns so far as a rich table, redrawn when a turn ends or an earlier one is revised."""

    def __init__(self, console: Any):
        from rich.live import Live

        self.rows: list[list[str]] = []
        self.live = Live(self._table(), console=console, auto_refresh=False)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table("turn", "time (s)", "speaker", "text", "emotion", "p", "latency (s)")
        for row in self.rows:
            table.add_row(*row)
        return table

    def show(self, event: Any) -> None:
        if event.type == "turn":
            self.rows.append([str(event.turn), f"{event.start:.1f}–{event.end:.1f}", event.speaker, event.text, "", "", f"{event.latency:.2f}"])
        row = self.rows[event.turn]
        label = ", ".join(event.label) if isinstance(event.label, list) else event.label
        top = max(event.probabilities.values()) if event.probabilities else 0.0
        row[2], row[4], row[5] = event.speaker, label + (" (revised)" if event.type == "revision" else ""), f"{top:.2f}"
        self.live.update(self._table(), refresh=True)


def live(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (RUN/seed0/best) or a `merkit export` folder.")],
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Recording to play through the live session: an audio or video file.")] = None,
    mic: Annotated[bool, typer.Option("--mic", help="Listen to the default microphone until Ctrl+C (needs the live extra).")] = False,
    pace: Annotated[bool, typer.Option("--pace/--no-pace", help="Play --input at real-time pace (else as fast as it is processed).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON: one event per line (turns and revisions).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the conversation's timeline at the end (JSON, atomically).")] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", "-s", help="Override a setting: key=value (repeatable), of the live session (min_pause, early_asr, context_turns, vad_threshold, ...)."),
    ] = None,
    speakers: Annotated[Optional[str], typer.Option(help=SPEAKERS_HELP)] = None,
    asr: Annotated[str, typer.Option(help="Whisper for recordings: tiny (tiny.en), base, or a CTranslate2 Whisper folder.")] = "tiny",
    language: Annotated[Optional[str], typer.Option(help="Recording input: the spoken language (default: English for tiny, detected by base).")] = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
) -> None:
    """Emotions of a conversation turn by turn, as each turn ends, with the earlier turns as context."""
    bound_native_caches()  # first: MKL reads its variable when torch is imported
    from pydantic import ValidationError
    from rich.console import Console

    from merkit.data.formats import parse_options
    from merkit.inference import validation_message
    from merkit.io import atomic_write_text
    from merkit.live import LiveSession, LiveSettings, OneSpeaker
    from merkit.loading import load

    if (input is None) == (not mic):
        raise MerkitError("give one of --input FILE and --mic")
    if speakers not in (None, "auto", "none"):
        raise MerkitError(f"--speakers {speakers}: live takes auto or none (an RTTM file describes a finished recording: "
                          "merkit predict CKPT RECORDING --speakers FILE)")  # fmt: skip
    try:
        given = {key: None if value in ("none", "None", "null") else value for key, value in parse_options(set_ or []).items()}
        settings = LiveSettings(asr=asr, language=language, **given)
    except ValidationError as exc:
        raise MerkitError(f"--set {validation_message(exc)}") from None
    set_torch_threads(threads)
    clock = time.monotonic
    frames = _microphone(clock) if mic else paced(file_frames(input), pace, clock)
    console = Console(stderr=False)
    table = None if as_json else _Table(console)
    latencies: list[float] = []
    with load(checkpoint, device=device, threads=threads) as predictor, LiveSession(predictor, settings, speakers=OneSpeaker() if speakers == "none" else None, clock=clock) as session:
        predictor.predict([{"text": "warming up"}])  # loads the text encoder before the first turn
        if not quiet and not as_json:
            typer.echo(f"merkit live: {predictor.meta['model']} listening to {'the microphone' if mic else input} (Ctrl+C stops)", err=True)

        def show(events: list[Any]) -> None:
            for event in events:
                if event.type == "turn":
                    latencies.append(event.latency)
                if table is None:
                    typer.echo(event.model_dump_json())
                else:
                    table.show(event)

        if table is not None:
            table.live.start()
        try:
            for frame, arrived in frames:
                for speech in session.listen(frame, arrived):
                    show(session.recognise(speech))
            show(session.stop())
        except KeyboardInterrupt:
            show(session.stop())
        finally:
            if table is not None:
                table.live.stop()
        timeline = session.timeline(predictor.name, predictor.labels.names)
    if out is not None:
        atomic_write_text(out, timeline.model_dump_json(indent=2) + "\n")
    if not quiet:
        for note in timeline.notes:
            typer.echo(f"merkit: note: {note}", err=True)
        if latencies:
            ordered = sorted(latencies)
            p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
            typer.echo(f"merkit: {len(latencies)} turns; latency from end of speech p50 {statistics.median(ordered):.2f} s, "
                       f"p95 {p95:.2f} s, max {ordered[-1]:.2f} s" + ("" if pace or mic else " (--no-pace: no real-time arrival)"), err=True)  # fmt: skip
        else:
            typer.echo("merkit: no speech heard", err=True)
