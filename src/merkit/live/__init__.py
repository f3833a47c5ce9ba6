"""A live conversation: 16 kHz mono audio in as it arrives, the emotion of each turn out as the turn ends (issue #36).

The stages are the recording pipeline's (:mod:`merkit.recording`), run incrementally: Silero voice activity over
the stream (:class:`~merkit.live.stream.StreamingVad`: the same model, state carried from window to window, and
the same decisions as :func:`~merkit.recording.speech_spans` makes on the whole file) closes a turn after
``min_pause`` of silence; the turn is transcribed by the same Whisper (:func:`~merkit.recording.transcribe`),
given a speaker (a :class:`~merkit.live.speakers.SpeakerAssigner`: the nearest speaker embedding of
:mod:`merkit.diarization` online, or one ``unknown`` speaker), and predicted by the checkpoint's
:class:`~merkit.inference.Predictor` with the earlier turns as its context (the whole conversation so far, or the
last ``context_turns``). Each turn's features are computed once: later turns reuse them.

Events (:class:`~merkit.live.session.TurnEvent`, :class:`~merkit.live.session.RevisionEvent`): a turn when it
ends, with its latency from the moment its end of speech was heard; a revision when a later turn changes the label
(a model that reads the whole dialogue, such as the BiGRU, re-predicts earlier turns) or the speaker of an earlier
turn. After the last turn, with the whole conversation as context, the labels are those of the offline timeline of
the same audio (:func:`~merkit.recording.predict_recording`), except where the two cut the speech differently (the
offline pipeline decodes in ``chunk``-second pieces and cuts each again).

[R] merkit's choices (fields of :class:`~merkit.live.session.LiveSettings`, beside
:class:`~merkit.recording.TurnSettings`' VAD, padding, segment and Whisper settings, a recording's too): ``context_turns`` None
(the whole conversation); ``early_asr`` 0.2 s: after that much silence the turn is transcribed and featurised in a
worker thread while the rest of ``min_pause`` is waited for, so the wait hides most of Whisper's cost (the work is
dropped if speech resumes).

Modules, one job each: :mod:`merkit.live.stream` (frames and voice activity), :mod:`merkit.live.speakers` (who
speaks), :mod:`merkit.live.session` (the session and its events). Their public names are here.

>>> import merkit
>>> from merkit.live import LiveSession
>>> with merkit.load("runs/mine/seed0/best") as predictor, LiveSession(predictor) as session:  # doctest: +SKIP
...     for chunk in chunks_from_a_microphone():
...         for event in session.feed(chunk):
...             print(event.model_dump_json())
...     events = session.stop()
"""


from merkit.live.session import LiveEvent, LiveSession, LiveSettings, RevisionEvent, TurnEvent
from merkit.live.speakers import NearestSpeaker, OneSpeaker, SpeakerAssigner, voice_speakers
from merkit.live.stream import CONTEXT, SAMPLE_TYPES, WINDOW, Speech, StreamingVad, decode_frame

__all__ = [
    "CONTEXT", "SAMPLE_TYPES", "WINDOW", "LiveEvent", "LiveSession", "LiveSettings", "NearestSpeaker", "OneSpeaker",
    "RevisionEvent", "SpeakerAssigner", "Speech", "StreamingVad", "TurnEvent", "decode_frame", "voice_speakers",
]  # fmt: skip
