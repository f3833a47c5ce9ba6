"""Inference from raw conversations: ``merkit.load(checkpoint)`` → :class:`Predictor`.

The predictor rebuilds every feature extractor recorded in the checkpoint's feature
manifest and refuses one whose fingerprint (name, settings, weight checksums) differs from
the recorded one, so a model never reads features from other weights than it was trained
on. It turns the input into a :class:`~merkit.data.corpus.Corpus`, extracts the modalities
the model reads, and runs the model over whole dialogues in batches (on the GPU when there
is one). An utterance without a modality's medium, or whose file gives nothing (silent,
corrupt, no face), has that modality masked, exactly as in training; the reason comes back
with its prediction (``notes``).

Inputs:

* Python objects: a list of utterance dicts (``speaker``, ``text``, ``audio``, ``video``,
  ``image``, ``frames`` (a folder), ``start``, ``end``, ``utterance_id``, ``dialogue_id``), ``{"dialogue_id": ..., "utterances":
  [...]}``, or ``{"dialogues": [...]}``; media paths are relative to ``base_dir``;
* a file: ``.json`` (the same objects), ``.txt`` ("Speaker: text" lines), or anything
  :func:`merkit.data.read_data` reads (your own ``.jsonl``/``.csv``, MELD, IEMOCAP, ...);
* a folder of media with one transcript file (``.jsonl``, ``.csv``, ``.json`` or ``.txt``):
  utterances name their files, or the files are named after the utterance ids
  (``3.wav``, ``3.mp4``, ``3.png``, a folder ``3/`` of frames).

Gold annotations in the input (``label``, ``sentiment``, ``split``) are ignored.

The package's modules, each importing only those above it in this list: :mod:`~merkit.inference.predictor`
(the Predictor, which knows no backend and no recording: :func:`merkit.load` chooses PyTorch or ONNX
Runtime, :func:`merkit.recording.predict_recording` turns a recording into a conversation for it);
:mod:`~merkit.inference.sources` (input → corpus, media matching), :mod:`~merkit.inference.extractors`
(rebuilt, fingerprint-checked extractors), :mod:`~merkit.inference.results` (the output);
:mod:`~merkit.inference.schema` (the input's pydantic models and parsing).

>>> import merkit
>>> predictor = merkit.load("runs/mine/seed0/best")  # doctest: +SKIP
>>> result = predictor.predict([{"speaker": "Ana", "text": "I got the job!"}])  # doctest: +SKIP
>>> result.utterances[0].label, result.utterances[0].probabilities["joy"]  # doctest: +SKIP
('joy', 0.81)
"""

from merkit.inference.extractors import rebuild_extractor
from merkit.inference.predictor import Predictor
from merkit.inference.results import PredictionResult, UtterancePrediction
from merkit.inference.schema import (
    MEDIA_FIELDS,
    ConversationInput,
    DialoguesInput,
    UtteranceInput,
    parse_lines,
    read_conversations,
    validation_message,
)
from merkit.inference.sources import MEDIA_SUFFIXES, TRANSCRIPT_SUFFIXES, corpus_of_conversations, read_input

__all__ = [
    "MEDIA_FIELDS",
    "MEDIA_SUFFIXES",
    "TRANSCRIPT_SUFFIXES",
    "ConversationInput",
    "DialoguesInput",
    "PredictionResult",
    "Predictor",
    "UtteranceInput",
    "UtterancePrediction",
    "corpus_of_conversations",
    "parse_lines",
    "read_conversations",
    "read_input",
    "rebuild_extractor",
    "validation_message",
]
