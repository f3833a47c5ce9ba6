"""The commands that use a trained model: ``predict``, ``serve`` and ``export`` (registered on the app in
:mod:`merkit.cli`)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Annotated, Optional

import typer

from merkit.cli_options import BackendOption, DeviceOption, QuietOption, ThreadsOption, set_torch_threads
from merkit.devices import bound_native_caches
from merkit.errors import MerkitError
from merkit.recording_commands import MaxSpeakersOption, MinSpeakersOption, NumSpeakersOption

PROGRESS_FROM = 50  # utterances from which `merkit predict` shows progress bars



def predict_conversations(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (RUN/seed0/best), a `merkit export` folder, or a zoo model (`merkit zoo list`); "
                                                   "left out: the zoo's default (text-meld; for a recording, text + voice fused).")],
    input: Annotated[
        Optional[Path], typer.Argument(help="A .jsonl/.csv/.json/.txt ('Speaker: text' lines) file, any corpus merkit reads, or a folder of media with one transcript.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (the default).")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV, one row per utterance.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write (atomically) instead of printing.")] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(help="Batch size: dialogues per model call.")] = 16,
    workers: Annotated[int, typer.Option(help="Processes per media extractor (0: one per core).")] = 1,
    threads: ThreadsOption = None,
    backend: BackendOption = "auto",
    quiet: QuietOption = False,
    speakers: Annotated[Optional[str], typer.Option(help="Recording input: auto (diarize; the default where the diarization extra is installed), none (one unknown speaker), or an RTTM file.")] = None,
    num_speakers: NumSpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
    shard: Annotated[Optional[str], typer.Option(help="Shard i/n only (0 <= i < n) of a folder of recordings, for array jobs.")] = None,
    asr: Annotated[str, typer.Option(help="Whisper for recordings: tiny (tiny.en), base, or a CTranslate2 Whisper folder.")] = "tiny",
    language: Annotated[Optional[str], typer.Option(help="Recording input: the spoken language (default: English for tiny, detected by base).")] = None,
    srt: Annotated[Optional[Path], typer.Option(help="Recording input: also write subtitles with each segment's emotion.")] = None,
    timeline: Annotated[Optional[Path], typer.Option(help="Recording input: also write an HTML page plotting each class's probability over time.")] = None,
) -> None:
    """Per-utterance emotions, probabilities, uncertainty and the modalities used, for raw conversations,
    or, for one audio/video recording, an emotion timeline of its speech segments (VAD + Whisper)."""
    from merkit.inference import MEDIA_SUFFIXES
    from merkit.loading import load

    if as_json and as_csv:
        raise MerkitError("choose one of --json and --csv")
    if input is None:  # `merkit predict FILE`: the zoo's default model for it
        input, checkpoint = checkpoint, None
    from merkit.recording_commands import diarization_settings, is_recording_folder, parse_speakers

    folder = is_recording_folder(input)
    recording = folder or (input.is_file() and input.suffix.lower() in MEDIA_SUFFIXES["audio"] + MEDIA_SUFFIXES["video"])
    if not recording and (speakers or num_speakers or min_speakers or max_speakers):
        raise MerkitError("--speakers, --num-speakers, --min-speakers and --max-speakers are for audio or video recordings", path=input)
    if shard is not None and not folder:
        raise MerkitError("--shard is for a folder of recordings", path=input)
    if folder and (srt or timeline or as_csv):
        raise MerkitError("a folder of recordings gets one JSON timeline per file and merged CSVs in --out DIR/; --srt, --timeline and --csv are for one recording", path=input)
    diarization = diarization_settings(num_speakers, min_speakers, max_speakers)
    speakers = parse_speakers(speakers) if recording else None
    from merkit.zoo import DEFAULT_RECORDING, DEFAULT_TEXT, FUSION, resolve

    checkpoint = resolve(checkpoint or (DEFAULT_RECORDING if recording else DEFAULT_TEXT))
    if (checkpoint / FUSION).is_file():
        if folder:
            raise MerkitError("the fused zoo model predicts one recording at a time; give a checkpoint for a folder of recordings", path=input)
        from merkit.fusion import predict_fused_command

        result = predict_fused_command(checkpoint.name, input, recording=recording, speakers=speakers, diarization=diarization, asr=asr,
                                       language=language, device=device, workers=workers, threads=threads, quiet=quiet)  # fmt: skip
        count, what = len(result.segments), "speech segments"
        return _write_prediction(result, count, what, as_csv=as_csv, out=out, srt=srt, timeline=timeline)
    if not recording and (srt or timeline or language or asr != "tiny"):
        raise MerkitError("--asr, --language, --srt and --timeline are for one audio or video recording", path=input)
    set_torch_threads(threads)
    with load(checkpoint, device=device, batch_size=batch_size, workers=workers, backend=backend, threads=threads) as predictor:
        if folder:
            from merkit.recording import RecordingSettings
            from merkit.recording_commands import predict_folder

            raise typer.Exit(predict_folder(predictor, input, out, RecordingSettings(asr=asr, language=language), speakers=speakers,
                                            diarization=diarization, shard=shard, progress=not quiet,
                                            log=lambda line: quiet or typer.echo(f"merkit: {line}", err=True)))  # fmt: skip
        if recording:
            from merkit.recording import RecordingSettings, predict_recording

            settings = RecordingSettings(asr=asr, language=language)
            result = predict_recording(predictor, input, settings, speakers=speakers, diarization=diarization, progress=not quiet,
                                       log=lambda line: quiet or typer.echo(f"merkit: {line}", err=True))  # fmt: skip
            count, what = len(result.segments), "speech segments"
        else:
            corpus = predictor.corpus(input)
            result = predictor.predict(corpus, progress=not quiet and corpus.num_utterances >= PROGRESS_FROM)
            count, what = len(result.utterances), "utterance predictions"
    _write_prediction(result, count, what, as_csv=as_csv, out=out, srt=srt, timeline=timeline)


def _write_prediction(result, count: int, what: str, *, as_csv: bool, out: Path | None, srt: Path | None, timeline: Path | None) -> None:
    """Every output made before any is written, each atomically; a recording's ``--csv --out FILE`` also writes its
    per-speaker summary (:func:`~merkit.recording_commands.recording_files`)."""
    from merkit.io import atomic_write_text
    from merkit.recording_commands import recording_files

    text = result.to_csv() if as_csv else result.model_dump_json(indent=2) + "\n"
    files = recording_files(result, as_csv=as_csv, out=out, srt=srt, timeline=timeline)
    for path, content in (({out: text} if out is not None else {}) | files).items():
        atomic_write_text(path, content)
    if out is None:
        typer.echo(text, nl=False)
        return
    typer.echo(f"wrote {out}: {count:,} {what}" + "".join(f"; {path}" for path in files), err=True)


def serve(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Checkpoint directory (RUN/seed0/best), a `merkit export` folder, or a zoo model "
                                                              "(default: text-meld, and the fused words + voice model for recordings).")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    max_utterances: Annotated[Optional[int], typer.Option(help="Utterances per request (default 200).")] = None,
    max_upload_mb: Annotated[Optional[float], typer.Option(help="Request size in MB (default 50).")] = None,
    max_media_seconds: Annotated[Optional[float], typer.Option(help="Duration of each uploaded media file (default 600).")] = None,
    max_characters: Annotated[Optional[int], typer.Option(help="Characters of text per request (default 50,000).")] = None,
    max_queue: Annotated[Optional[int], typer.Option(help="Requests running or waiting; more get 503 + Retry-After (default 8).")] = None,
    request_seconds: Annotated[Optional[float], typer.Option(help="Time a request may wait and run (default 60).")] = None,
    device: DeviceOption = "auto",
    workers: Annotated[int, typer.Option(help="Processes per media extractor (0: one per core).")] = 1,
    threads: ThreadsOption = None,
    backend: BackendOption = "auto",
    replicas: Annotated[int, typer.Option(help="Copies of the model serving requests at once (up to the cores; each takes its memory).", min=1)] = 1,
    max_recording_seconds: Annotated[Optional[float], typer.Option(help="Duration of a recording for POST /predict/recording (default 3600).")] = None,
    asr: Annotated[str, typer.Option(help="Whisper for recordings: tiny (tiny.en), base, or a CTranslate2 Whisper folder (POST /predict/recording).")] = "tiny",
    max_live_sessions: Annotated[Optional[int], typer.Option(help="WebSocket /live: connections open at once (default 4).")] = None,
    max_live_frame_bytes: Annotated[Optional[int], typer.Option(help="WebSocket /live: bytes of one audio frame (default 128,000).")] = None,
    max_live_seconds: Annotated[Optional[float], typer.Option(help="WebSocket /live: seconds of audio per connection (default 3600).")] = None,
    live_idle_seconds: Annotated[Optional[float], typer.Option(help="WebSocket /live: seconds without a message before it closes (default 30).")] = None,
) -> None:
    """HTTP server: POST /predict, POST /predict/recording, GET /health, GET /model, WebSocket /live, API docs at /docs, and a web page at /."""
    bound_native_caches()  # first: MKL reads its variable when torch is imported, and a server meets new shapes for weeks
    try:
        import uvicorn

        from merkit.serve import ServeLimits, create_app
    except ImportError as exc:
        raise MerkitError(f"merkit serve needs the serve extra ({exc.name} is missing): pip install 'merkit[serve]'") from None
    from pydantic import ValidationError

    from merkit.inference import validation_message
    from merkit.loading import load
    from merkit.zoo import DEFAULT_RECORDING, FUSION, resolve

    given = {
        "max_utterances": max_utterances, "max_upload_mb": max_upload_mb, "max_media_seconds": max_media_seconds,
        "max_characters": max_characters, "max_queue": max_queue, "request_seconds": request_seconds,
        "max_recording_seconds": max_recording_seconds,
    }  # fmt: skip
    live_given = {"max_sessions": max_live_sessions, "max_frame_bytes": max_live_frame_bytes, "max_session_seconds": max_live_seconds,
                  "idle_seconds": live_idle_seconds}  # fmt: skip
    try:
        limits = ServeLimits(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as exc:
        raise MerkitError(f"--{validation_message(exc).replace('_', '-')}") from None
    from merkit.serve.live import LiveLimits

    try:
        live = LiveLimits(**{key: value for key, value in live_given.items() if value is not None})
    except ValidationError as exc:
        option = {"max_sessions": "max_live_sessions", "max_frame_bytes": "max_live_frame_bytes", "max_session_seconds": "max_live_seconds",
                  "idle_seconds": "live_idle_seconds"}[str(exc.errors()[0]["loc"][0])]  # fmt: skip
        raise MerkitError(f"--{option.replace('_', '-')}: {exc.errors()[0]['msg']}") from None
    from merkit.recording import RecordingSettings, asr_folder

    if asr not in ("tiny", "base"):
        asr_folder(asr)  # a wrong folder is said now, not at the first recording
    set_torch_threads(threads)
    fused_name = DEFAULT_RECORDING if checkpoint is None else resolve(checkpoint).name if (resolve(checkpoint) / FUSION).is_file() else None
    listening = _listen(host, port)  # a busy port is said now, not after the model has loaded
    predictors, fused = [], None
    try:
        if fused_name is not None:  # recordings get the fused words + voice model; conversations its words model
            from merkit.fusion import load_fused

            fused = load_fused(fused_name, device=device, workers=workers, threads=threads)
        for _ in range(replicas):
            shared = fused is not None and replicas == 1  # one replica: the fused model's words model serves conversations too
            predictors.append(fused.words if shared else load(fused.spec.words if fused else checkpoint, device=device, workers=workers,
                                                                   backend=backend, threads=threads))  # fmt: skip
            predictors[-1].predict([{"text": "warming up"}])  # loads the text encoder and the model before the first request
    except BaseException:
        _close(predictors, fused)
        listening.close()
        raise
    info = predictors[0].describe()
    recordings = f", recordings: {fused.name}" if fused is not None else ""
    typer.echo(f"merkit serve: {info['model']}{recordings} ({info['backend']}, {replicas} replica(s)) on http://{host}:{port}/ "
               "(API docs at /docs)", err=True)  # fmt: skip
    try:
        app = create_app(predictors, limits, RecordingSettings(asr=asr), live, fused=fused)
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[listening])
    finally:
        _close(predictors, fused)
        listening.close()


def _close(predictors: list, fused) -> None:
    """Close every model once (a replica may be the fused model's own words model)."""
    for predictor in predictors:
        if fused is None or predictor is not fused.words:
            predictor.close()
    if fused is not None:
        fused.close()


def _listen(host: str, port: int):
    """A socket bound to ``host:port`` and listening (uvicorn serves on it), or a clear error when it cannot be."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: without it an answer written in two parts waits for the client's
        # delayed ACK, 40 ms on every keep-alive request.
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listening.bind((host, port))
        listening.listen(2048)
    except OSError as exc:
        why = "is in use by another program" if getattr(exc, "errno", None) == errno.EADDRINUSE else f"cannot be used ({exc.strerror or exc})"
        raise MerkitError(f"--port {port} on {host} {why}; choose another --port") from None
    return listening


def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (RUN/seed0/best) or a `merkit export` folder.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write: the model folder.")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Also the text encoders and the model as ONNX graphs (onnx/), checked against torch.")] = False,
    quantize: Annotated[str, typer.Option(help="none, or int8: dynamic int8 quantisation of the ONNX text encoders (implies --onnx).")] = "none",
) -> None:
    """A model folder: weights, model.json (config), labels, feature manifest, metrics and a README model card."""
    from merkit.export import export_model

    if onnx or quantize != "none":
        from merkit.onnx_export import export_onnx

        record = export_onnx(checkpoint, out, quantize=quantize)
        check = record["check"]
        typer.echo(f"ONNX graphs checked against torch on {check['utterances']} utterances: largest probability difference "
                   f"{check['max_abs_probability_difference']:.2g}, same label for {100 * check['label_agreement']:.1f} %")  # fmt: skip
    else:
        export_model(checkpoint, out)
    folder = out
    files = ", ".join(sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")))
    typer.echo(f"wrote {folder}: {files}")
