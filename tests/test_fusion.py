"""The fused recording default (issue #38): the rule (spread and typicality weighting), its choice on validation rows,
the voice's typicality, both tracks kept in every output, the entry's name in its outputs, and the server's default
for recordings."""

from __future__ import annotations

import json
import wave
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from merkit.cli import app
from merkit.errors import MerkitError
from merkit.fusion import FusionSpec, Tracks, fused_timeline, pool, spread, to_shared, weights
from merkit.io import write_joined_wav, write_wav
from merkit.typicality import Typicality
from merkit.zoo import DEFAULT_RECORDING, FUSION, card, locate

runner = CliRunner()
LABELS = ["neutral", "joy", "anger"]


def _spec(**update) -> FusionSpec:
    same = dict(zip(LABELS, LABELS))
    return FusionSpec(words="w", voice="v", labels=LABELS, words_map=same, voice_map=same, **update)


def _shipped() -> FusionSpec:
    return FusionSpec.model_validate(json.loads((locate(DEFAULT_RECORDING) / FUSION).read_text()))


def _rows(*values):
    return [None if v is None else np.asarray(v, dtype=float) for v in values]


# ------------------------------------------------------------------ the rule
def test_a_track_that_says_the_same_of_every_segment_gives_way_to_the_other():
    """Words that never change (RAVDESS's two fixed sentences) have no spread over the recording: with γ > 0 the fused
    label of each segment follows the voice, where a plain log-linear pool (γ = 0) lets the constant words win."""
    spec = _spec(alpha=0.5, gamma=2.0)
    words = [np.array([0.8, 0.1, 0.1])] * 3
    voice = [np.array([0.3, 0.6, 0.1]), np.array([0.3, 0.1, 0.6]), np.array([0.8, 0.1, 0.1])]
    assert spread(words) == 0.0 and spread(voice) == pytest.approx(1.0) and spread(words[:1]) == 1.0
    fused = [LABELS[int(pool(w, v, spec, spread(words), spread(voice)).argmax())] for w, v in zip(words, voice)]
    assert fused == ["joy", "anger", "neutral"]
    plain = spec.model_copy(update={"gamma": 0.0})
    assert [LABELS[int(pool(w, v, plain).argmax())] for w, v in zip(words, voice)] == ["neutral"] * 3


def test_a_voice_below_the_typicality_floor_is_left_out_and_a_usual_one_is_not():
    """A confident voice outvotes mild words when its sound is usual; from a voice unlike any the voice model learnt
    from (typicality below the floor θ) the words answer alone, and θ = 0 never leaves the voice out."""
    words, voice = np.array([0.2, 0.6, 0.2]), np.array([0.05, 0.05, 0.9])
    spec = _spec(alpha=0.5, typicality_floor=0.01)
    assert LABELS[int(pool(words, voice, spec, typicality=0.5).argmax())] == "anger"
    assert np.allclose(pool(words, voice, spec, typicality=0.004), words)  # T = 1: the words' own distribution
    assert LABELS[int(pool(words, voice, spec, typicality=0.004).argmax())] == "joy" and weights(spec, typicality=0.004) == (1.0, 0.0)
    assert LABELS[int(pool(words, voice, spec.model_copy(update={"typicality_floor": 0.0}), typicality=0.004).argmax())] == "anger"


def test_calm_is_read_as_neutral_by_the_documented_map():
    spec = _shipped()
    shared = to_shared({"neutral": 0.2, "calm": 0.5, "happy": 0.3}, spec.voice_map, spec.labels)
    assert shared[spec.labels.index("neutral")] == pytest.approx(0.7) and shared[spec.labels.index("joy")] == pytest.approx(0.3)


def test_fusion_keeps_both_tracks_lets_one_answer_alone_and_names_the_entry():
    from merkit.recording import Timeline, TimelineSegment

    spec = _shipped()
    k = len(spec.labels)
    joy, anger = np.eye(k)[spec.labels.index("joy")] * 0.9 + 0.1 / k, np.eye(k)[spec.labels.index("anger")] * 0.9 + 0.1 / k
    segment = TimelineSegment(start=0, end=1, speaker="unknown", text="x", label="neutral", probabilities=dict.fromkeys(spec.labels, 1 / k))
    spec = spec.model_copy(update={"typicality_floor": 0.01})
    four = Timeline(recording="r.wav", model="m", labels=spec.labels, speakers="unknown", segments=[segment] * 4)
    word_rows, voice_rows = _rows(joy, None, joy, joy), _rows(None, anger, anger, anger)
    timeline = fused_timeline(DEFAULT_RECORDING, spec, Tracks(four, word_rows, voice_rows, [None] * 4, [None, 0.5, 0.5, 0.004]))
    first, second, third, fourth = timeline.segments
    assert timeline.model == DEFAULT_RECORDING and timeline.fusion["entry"] == DEFAULT_RECORDING
    assert first.answered_by == ["words"] and first.label == "joy" and first.tracks["voice"].label is None
    assert "the words answer alone" in first.tracks["voice"].note and first.tracks["words"].weight == 1.0
    assert second.answered_by == ["voice"] and second.label == "anger" and "voice answers alone" in second.tracks["words"].note
    assert third.answered_by == ["words", "voice"] and {third.tracks["words"].label, third.tracks["voice"].label} == {"joy", "anger"}
    assert third.tracks["words"].weight + third.tracks["voice"].weight == pytest.approx(1.0) and third.tracks["voice"].typicality == 0.5
    expected = pool(joy, anger, spec, spread(word_rows), spread(voice_rows), 0.5)
    assert np.allclose(list(third.probabilities.values()), expected, atol=1e-5)
    assert fourth.answered_by == ["words"] and fourth.label == "joy" and fourth.tracks["voice"].label == "anger"
    assert "unlike the speech the voice model learnt from" in fourth.tracks["voice"].note and fourth.tracks["voice"].weight == 0.0
    assert any("1 of 4 segments had only the words track" in note for note in timeline.notes)
    assert any("1 of 4 segments sound unlike" in note for note in timeline.notes)
    assert "words: joy" in third.label_text() and "voice: anger" in third.label_text()
    assert "words_label" in timeline.to_csv().splitlines()[0]


# ------------------------------------------------------------------ the choice, on validation rows only
def _case(truth: list[str], words: list[str], voice: list[str], typicality: float):
    """Rows of one synthetic case: each track says its label with probability 0.8."""
    from merkit.fusion_cases import Rows

    said = lambda name: np.where(np.array(LABELS) == name, 0.8, 0.1)  # noqa: E731
    n = len(truth)
    return Rows(truth=truth, words=[said(w) for w in words], voice=[said(v) for v in voice], words_spread=[1.0] * n,
                voice_spread=[1.0] * n, typicality=[typicality] * n, matched=[True] * n, recording=[0] * n)  # fmt: skip


def test_the_choice_keeps_the_fused_track_near_the_better_track_of_each_case():
    """Case A: the words are right, the voice confidently wrong and atypical; case B: the voice is right, the words
    wrong. The chosen rule follows the words in A and the voice in B; without the typicality no rule can."""
    from merkit.fusion_cases import choose, scores

    cycle = (LABELS * 10)[:30]
    wrong = cycle[1:] + cycle[:1]
    valid = {"A": _case(cycle, cycle, wrong, 0.004), "B": _case(cycle, wrong, cycle, 0.5)}
    chosen = choose(valid, _spec(typicality={"dims": 2}))
    assert chosen.typicality_floor > 0.004 and chosen.selection["within_tolerance"] > 0
    assert set(chosen.selection["groups_best_track_accuracy"].values()) == {100.0}
    for name, rows in valid.items():
        assert scores(rows, "fused", LABELS, chosen)["accuracy"] == 100.0, (name, chosen)
    blind = choose({n: replace(r, typicality=[1.0] * len(r.truth)) for n, r in valid.items()}, _spec())
    assert blind.typicality_floor == 0.0 and blind.selection["within_tolerance"] == 0
    assert min(v["accuracy"] for v in blind.selection["valid"].values()) < 99.0


# ------------------------------------------------------------------ typicality
def test_typicality_is_uniform_on_held_out_rows_of_the_same_kind_and_tiny_far_from_them(tmp_path):
    rng = np.random.default_rng(0)
    scale = np.linspace(3.0, 0.1, 20)
    reference, calibration, held_out = (rng.normal(size=(n, 20)) * scale for n in (800, 400, 400))
    fitted = Typicality.fit(reference, calibration, dims=8)
    near = fitted(held_out)
    assert 0.4 < near.mean() < 0.6 and 0.05 < np.mean(near < 0.1) < 0.17  # a p-value: uniform on the same kind of rows
    far = fitted(held_out + 8 * scale)
    assert np.all(far == 1 / (len(calibration) + 1))
    fitted.save(tmp_path / "t.safetensors")
    again = Typicality.load(tmp_path / "t.safetensors")
    assert np.allclose(again(held_out), near, atol=1 / len(calibration))
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(MerkitError, match="bad.safetensors"):
        Typicality.load(tmp_path / "bad.safetensors")
    with pytest.raises(MerkitError, match="more than 8 reference rows"):
        Typicality.fit(reference[:8], calibration, dims=8)


def test_the_shipped_entry_records_how_it_weighs_the_voice():
    spec = _shipped()
    assert spec.selection["criterion"] and set(spec.selection["valid"]) == {"ravdess-valid", "espeak-meld-valid"}
    if spec.typicality_floor > 0:
        assert (locate(DEFAULT_RECORDING) / "typicality.safetensors").is_file() and spec.typicality["calibration_actors"]


# ------------------------------------------------------------------ wav writing (merkit.io)
def test_a_joined_wav_holds_its_pieces_at_their_spans(tmp_path):
    pieces = [np.full(800, 0.5, np.float32), np.full(1600, -0.25, np.float32)]
    spans = write_joined_wav(tmp_path / "j.wav", pieces, pause=0.5, rate=8000)
    assert spans == [(0.0, 0.1), (0.6, 0.8)]
    with wave.open(str(tmp_path / "j.wav")) as handle:
        assert handle.getframerate() == 8000 and handle.getnchannels() == 1 and handle.getnframes() == 800 + 4000 + 1600 + 4000
        samples = np.frombuffer(handle.readframes(handle.getnframes()), "<i2") / 32767
    assert samples[:800] == pytest.approx(0.5, abs=1e-4) and samples[4800:6400] == pytest.approx(-0.25, abs=1e-4)
    assert not samples[800:4800].any() and write_wav(tmp_path / "c.wav", np.array([2.0, -2.0])).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # written atomically: no temporary left


# ------------------------------------------------------------------ on a real recording
@pytest.fixture(scope="module")
def meeting(tmp_path_factory):
    pytest.importorskip("faster_whisper")
    from media_helpers import join_clips, speak

    folder = tmp_path_factory.mktemp("meeting")
    lines = ["I am so happy today, this is wonderful news!", "I hate this, I am absolutely furious with you!"]
    clips = [speak(line, folder / f"{i}.wav") for i, line in enumerate(lines)]
    join_clips(clips, folder / "meeting.wav", pause=1.0)
    return folder / "meeting.wav"


def test_the_fused_default_reads_a_recording_and_names_itself(meeting):
    result = runner.invoke(app, ["predict", str(meeting), "--speakers", "none", "--threads", "1", "-q"])
    assert result.exit_code == 0, result.output
    timeline = json.loads(result.stdout)
    assert timeline["model"] == DEFAULT_RECORDING and timeline["fusion"]["entry"] == DEFAULT_RECORDING
    assert timeline["labels"] == card("text-meld").labels and len(timeline["segments"]) >= 2
    for segment in timeline["segments"]:
        assert set(segment["tracks"]) == {"words", "voice"} and segment["answered_by"] and segment["label"] in timeline["labels"]
        if segment["answered_by"] == ["words", "voice"]:
            assert segment["tracks"]["words"]["weight"] + segment["tracks"]["voice"]["weight"] == pytest.approx(1.0, abs=1e-5)
    gated = [s for s in timeline["segments"] if s["answered_by"] == ["words"] and s["tracks"]["voice"]["label"] is not None]
    assert gated and all(s["tracks"]["voice"]["weight"] == 0.0 and s["tracks"]["voice"]["typicality"] < timeline["fusion"]["typicality_floor"] for s in gated)


@pytest.fixture(scope="module")
def fused():
    from merkit.fusion import load_fused

    with load_fused(DEFAULT_RECORDING, threads=1) as loaded:
        yield loaded


def test_the_server_answers_a_recording_with_the_fused_default(meeting, fused):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from merkit.serve import create_app

    with TestClient(create_app([fused.words], fused=fused)) as client:
        assert client.get("/model").json()["recording"]["model"] == DEFAULT_RECORDING
        with meeting.open("rb") as handle:
            answer = client.post("/predict/recording", files={"recording": ("meeting.wav", handle, "audio/wav")}, data={"speakers": "none"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == DEFAULT_RECORDING and body["recording"] == "meeting.wav" and body["fusion"]["entry"] == DEFAULT_RECORDING
        assert all(set(s["tracks"]) == {"words", "voice"} and s["answered_by"] for s in body["segments"])
        said = client.post("/predict", json={"utterances": [{"speaker": "A", "text": "I got the job!"}]})
        assert said.status_code == 200 and said.json()["model"] == "text-meld", said.text


def test_the_pages_recording_tab_says_which_tracks_answered(meeting, fused):
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    from conftest import serving

    from merkit.serve import create_app

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it with apt when run as root)")
    with serving(create_app([fused.words], fused=fused)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(url)
        page.click("#tab-recording")
        page.set_input_files("#recording", str(meeting))
        page.click("#recording-submit")
        page.wait_for_selector("#recording-status[data-done=true]", timeout=120_000)
        tracks = page.locator("[data-testid=tracks]").all_text_contents()
        cards = page.locator(".utterance").all_text_contents()
        browser.close()
    assert tracks and len(tracks) == len(cards)
    assert all(t.startswith("tracks: words ") and " · voice " in t for t in tracks)
    assert all("answered by: " in c for c in cards)
    # espeak-ng's synthetic voice lies beyond every calibration clip of the voice model's actors: the words answer alone
    assert any("answered by: words" in c and "unlike the speech the voice model learnt from" in c for c in cards)
