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

The Predictor knows no backend and no recording: :func:`merkit.load` (:mod:`merkit.loading`) chooses
PyTorch or ONNX Runtime, and :func:`merkit.recording.predict_recording` turns a raw recording into a
conversation for it.

>>> import merkit
>>> predictor = merkit.load("runs/mine/seed0/best")  # doctest: +SKIP
>>> result = predictor.predict([{"speaker": "Ana", "text": "I got the job!"}])  # doctest: +SKIP
>>> result.utterances[0].label, result.utterances[0].probabilities["joy"]  # doctest: +SKIP
('joy', 0.81)
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, field_validator, model_validator

from merkit._version import __version__
from merkit.checkpoint import Checkpoint
from merkit.data.corpus import MAX_SECONDS, MEDIA_KINDS, Corpus, Dialogue, LabelSchema, Utterance, build_corpus, build_utterance
from merkit.data.images import IMAGE_SUFFIXES, is_frame_folder
from merkit.data.features import FeatureSet, stack_rows
from merkit.data.formats import Source, detect_format, read_data
from merkit.deadlines import check_deadline
from merkit.devices import resolve_device
from merkit.errors import MerkitError
from merkit.features.extract import Absent
from merkit.features.registry import Extractor, available_extractors, get_extractor
from merkit.prediction import Predictions, make_loader, predict
from merkit.progress import progress_bar
from merkit.thresholds import checkpoint_thresholds

MEDIA_FIELDS = MEDIA_KINDS
IGNORED_FIELDS = ("label", "sentiment", "split")  # gold annotations of a training file, not inputs
TRANSCRIPT_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".json", ".txt")
MEDIA_SUFFIXES = {
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus"),
    "video": (".mp4", ".mkv", ".avi", ".webm", ".mov"),
    "image": IMAGE_SUFFIXES,
}
MEDIA_MODALITY = {"audio": "audio", "video": "visual", "image": "visual", "frames": "visual"}  # what each medium gives
SPLIT = "test"  # the one split an inference corpus has: every dialogue in it
INPUT_POSITION = "input_position"  # utterance meta: its place in a flat input list of turns
EXTRACT_BATCH = 32  # inputs per extractor call


# ------------------------------------------------------------------ the input
class UtteranceInput(BaseModel):
    """One turn to predict: text and/or media files (relative to the input's folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    utterance_id: str | None = Field(None, description="unique within the dialogue (default: its position, from 0)")
    dialogue_id: str | None = Field(None, description="groups a flat list of turns into dialogues")
    speaker: str = ""
    text: str = ""
    audio: str | None = Field(None, description="audio file (or a video whose sound track is used)")
    video: str | None = Field(None, description="video file")
    image: str | None = Field(None, description="image file: a face crop or a photograph")
    frames: str | None = Field(None, description="folder of frames (or OpenFace's output folder with its *_aligned crops)")
    start: float | None = Field(None, ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds from the start of the media file")
    end: float | None = Field(None, ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds from the start of the media file")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        """Drop gold annotations, flatten a ``media`` mapping, and name any unknown field or modality."""
        if not isinstance(data, Mapping):
            return data
        data = {key: value for key, value in data.items() if key not in IGNORED_FIELDS}
        media = data.pop("media", None) or {}
        if not isinstance(media, Mapping):
            raise ValueError(f"media must map a kind of medium ({', '.join(MEDIA_FIELDS)}) to a file name")
        for modality, path in media.items():
            if modality not in MEDIA_FIELDS:
                raise ValueError(f"unknown modality {modality!r} in media (media can be: {', '.join(MEDIA_FIELDS)})")
            data[modality] = path
        unknown = [key for key in data if key not in cls.model_fields]
        if unknown:
            raise ValueError(
                f"unknown field {unknown[0]!r} (an utterance has: {', '.join(cls.model_fields)}; "
                f"the media are {', '.join(MEDIA_FIELDS)})"
            )
        for key in ("utterance_id", "dialogue_id"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                data[key] = str(data[key])
        return data

    @field_validator("utterance_id", "dialogue_id", "speaker", "text", *MEDIA_FIELDS)
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        """A lone surrogate (``"\\ud800"`` in JSON) is not Unicode text: refused here, not a crash when encoding the answer."""
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"not valid Unicode text: {value[exc.start:exc.end]!a} at character {exc.start}") from None
        return value


class ConversationInput(BaseModel):
    """One dialogue: its turns in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dialogue_id: str = Field("conversation", min_length=1)
    utterances: list[UtteranceInput] = Field(json_schema_extra={"minItems": 1})  # the empty case has its own message
    # Where each turn stood in a flat input list (turns of several dialogues, interleaved): answers keep that order.
    _positions: list[int] | None = PrivateAttr(None)

    @field_validator("utterances")
    @classmethod
    def _not_empty(cls, utterances: list[UtteranceInput]) -> list[UtteranceInput]:
        if not utterances:
            raise ValueError("the conversation is empty (no utterances)")
        return utterances

    @model_validator(mode="after")
    def _one_dialogue(self) -> "ConversationInput":
        for index, turn in enumerate(self.utterances):
            if turn.dialogue_id is not None and turn.dialogue_id != self.dialogue_id:
                raise ValueError(
                    f"utterances.{index}.dialogue_id {turn.dialogue_id!r} is not the conversation's dialogue_id "
                    f"{self.dialogue_id!r}; to send several dialogues, give a flat list of turns or 'dialogues'"
                )
        return self


class DialoguesInput(BaseModel):
    """Several dialogues in one request."""

    model_config = ConfigDict(extra="forbid")

    dialogues: list[ConversationInput] = Field(min_length=1)


_TURNS = TypeAdapter(list[UtteranceInput])


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """The first errors of a pydantic validation as ``where: what`` phrases."""
    errors = exc.errors()
    parts = []
    for error in errors[:limit]:
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def read_conversations(data: Any) -> list[ConversationInput]:
    """Python objects (see the module docstring) → validated conversations; a :class:`MerkitError` says what is wrong."""
    try:
        if isinstance(data, ConversationInput):
            return [data]
        if isinstance(data, list) and data and all(isinstance(item, ConversationInput) for item in data):
            return list(data)
        if isinstance(data, Mapping):
            if "dialogues" in data and "utterances" not in data:
                return DialoguesInput.model_validate(data).dialogues
            turns = data.get("utterances")
            if set(data) == {"utterances"} and isinstance(turns, list) and any(isinstance(t, Mapping) and t.get("dialogue_id") is not None for t in turns):
                return _grouped(turns)  # no dialogue_id of its own: the turns' dialogue_ids group them
            return [ConversationInput.model_validate(data)]
        if isinstance(data, list):
            if data and all(isinstance(item, Mapping) and "utterances" in item for item in data):
                return DialoguesInput.model_validate({"dialogues": data}).dialogues
            return _grouped(data)
    except ValidationError as exc:
        raise MerkitError(validation_message(exc)) from None
    raise MerkitError(
        f"a conversation is a list of utterances or an object with 'utterances', not {type(data).__name__}"
    )


def _grouped(data: list[Any]) -> list[ConversationInput]:
    """A flat list of turns → one conversation per ``dialogue_id`` (first appearance first), each turn's place kept."""
    turns = _TURNS.validate_python(data)
    if not turns:
        raise MerkitError("the conversation is empty (no utterances)")
    grouped: dict[str, list[tuple[int, UtteranceInput]]] = {}
    for position, turn in enumerate(turns):
        grouped.setdefault(turn.dialogue_id or "conversation", []).append((position, turn))
    conversations = []
    for dialogue_id, placed in grouped.items():
        conversation = ConversationInput(dialogue_id=dialogue_id, utterances=[turn for _, turn in placed])
        conversation._positions = [position for position, _ in placed]
        conversations.append(conversation)
    return conversations


def parse_lines(text: str, dialogue_id: str = "conversation") -> ConversationInput:
    """``"Speaker: text"`` lines → one conversation (a line without a speaker prefix is text alone).

    >>> [(u.speaker, u.text) for u in parse_lines("Ana: I got the job!\\nNo way.").utterances]
    [('Ana', 'I got the job!'), ('', 'No way.')]
    """
    turns = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        speaker, colon, said = line.partition(":")
        if colon and 0 < len(speaker.strip()) <= 40 and said.strip():
            turns.append(UtteranceInput(speaker=speaker.strip(), text=said.strip()))
        else:
            turns.append(UtteranceInput(text=line))
    if not turns:
        raise MerkitError("the conversation is empty (no utterances)")
    return ConversationInput(dialogue_id=dialogue_id, utterances=turns)


def _resolve(path: str, base: Path) -> str:
    return str(path) if Path(path).is_absolute() else str((base / path).resolve())


def corpus_of_conversations(conversations: Sequence[ConversationInput], labels: LabelSchema, base: Path, name: str = "input") -> Corpus:
    """An unlabelled corpus with every dialogue in the inference split; media paths resolved against ``base``."""
    dialogues = []
    for conversation in conversations:
        utterances = []
        ids = _utterance_ids(conversation)
        positions = conversation._positions or [None] * len(ids)
        for index, (turn, utterance_id, position) in enumerate(zip(conversation.utterances, ids, positions, strict=True)):
            media = {field: _resolve(getattr(turn, field), base) for field in MEDIA_FIELDS if getattr(turn, field)}
            try:
                utterances.append(
                    build_utterance(
                        id=f"{conversation.dialogue_id}/{utterance_id}", speaker=turn.speaker, text=turn.text,
                        start=turn.start, end=turn.end, media=media,
                        meta={} if position is None else {INPUT_POSITION: str(position)},
                    )
                )  # fmt: skip
            except MerkitError as exc:
                raise exc.at(place=f"dialogue {conversation.dialogue_id!r}, utterance {index}") from None
        dialogues.append(Dialogue(id=conversation.dialogue_id, utterances=tuple(utterances)))
    return _inference_corpus(name, dialogues, labels)


def _utterance_ids(conversation: ConversationInput) -> list[str]:
    """Each turn's ``utterance_id``, or its position (from 0) when it has none; a clash is an error naming both turns."""
    ids = [turn.utterance_id or str(index) for index, turn in enumerate(conversation.utterances)]
    first: dict[str, int] = {}
    for index, utterance_id in enumerate(ids):
        if utterance_id in first:
            given = [i for i in (first[utterance_id], index) if conversation.utterances[i].utterance_id]
            why = "" if len(given) == 2 else " (a turn without an utterance_id is named by its position, from 0)"
            raise MerkitError(
                f"dialogue {conversation.dialogue_id!r}: utterances {first[utterance_id]} and {index} are both named "
                f"{utterance_id!r}{why}; give every turn its own utterance_id, or none"
            )
        first[utterance_id] = index
    return ids


def _inference_corpus(name: str, dialogues: Sequence[Dialogue], labels: LabelSchema) -> Corpus:
    return build_corpus(name=name, labels=labels, dialogues=tuple(dialogues), splits={SPLIT: tuple(d.id for d in dialogues)})


def _unlabelled(corpus: Corpus, labels: LabelSchema) -> Corpus:
    """The corpus without its gold annotations, under the model's label schema, all in the inference split."""
    dialogues = [
        Dialogue(id=d.id, utterances=tuple(u.model_copy(update={"label": None, "sentiment": None}) for u in d.utterances))
        for d in corpus.dialogues
    ]
    return _inference_corpus(corpus.name, dialogues, labels)


def _attach_folder_media(corpus: Corpus, folder: Path) -> Corpus:
    """Give each utterance without media the folder's files named after it (``<utterance_id>.wav``, ``.png``, a
    ``<utterance_id>/`` folder of frames ...).

    Files numbered 1…N beside utterances numbered 0…N−1 (a ``.txt`` transcript's lines count from 0)
    are matched in order, with a warning; files named after no utterance are listed in a warning."""
    by_stem: dict[str, dict[str, str]] = {}
    for path in sorted(folder.iterdir()):
        for modality, suffixes in MEDIA_SUFFIXES.items():
            if path.is_file() and path.suffix.lower() in suffixes:
                by_stem.setdefault(path.stem, {}).setdefault(modality, str(path.resolve()))
        if path.is_dir() and is_frame_folder(path):
            by_stem.setdefault(path.name, {}).setdefault("frames", str(path.resolve()))
    own_ids = [u.id.removeprefix(f"{d.id}/") for d in corpus.dialogues for u in d.utterances]
    count = len(own_ids)
    shift = 0
    if set(by_stem) == {str(i) for i in range(1, count + 1)} and set(own_ids) == {str(i) for i in range(count)}:
        shift = 1
        warnings.warn(f"{folder}: the media files are numbered 1-{count} and the utterances 0-{count - 1}: "
                      f"matched in order (1.* to the first utterance)", UserWarning, stacklevel=3)  # fmt: skip
    used: set[str] = set()
    dialogues = []
    for dialogue in corpus.dialogues:
        utterances = []
        for utterance in dialogue.utterances:
            own_id = utterance.id.removeprefix(f"{dialogue.id}/")
            if shift:
                own_id = str(int(own_id) + shift)
            stem = next((s for s in (own_id, f"{dialogue.id}_{own_id}") if s in by_stem), None)
            if not utterance.media and stem is not None:
                utterance = utterance.model_copy(update={"media": by_stem[stem]})
                used.add(stem)
            utterances.append(utterance)
        dialogues.append(Dialogue(id=dialogue.id, utterances=tuple(utterances)))
    unused = [Path(p).name for stem, media in by_stem.items() if stem not in used for p in media.values()]
    if unused:
        shown = ", ".join(unused[:5]) + (", …" if len(unused) > 5 else "")
        warnings.warn(f"{folder}: {len(unused)} media file(s) named after no utterance, not used: {shown} "
                      f"(name them after the utterance ids: {', '.join(own_ids[:3])}, …)", UserWarning, stacklevel=3)  # fmt: skip
    return _inference_corpus(corpus.name, dialogues, corpus.labels)


def read_input(source: str | Path, labels: LabelSchema) -> Corpus:
    """A file or folder (see the module docstring) → an unlabelled inference corpus."""
    path = Path(source)
    if not path.exists():
        raise MerkitError("no such file or directory", path=path)
    if path.is_dir():
        transcripts = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TRANSCRIPT_SUFFIXES)
        if len(transcripts) == 1:
            return _attach_folder_media(read_input(transcripts[0], labels), path)
        try:
            detect_format(Source(path))  # a corpus folder merkit reads (MELD, a feature store, ...)
        except MerkitError:
            found = ", ".join(p.name for p in transcripts) or "none"
            raise MerkitError(
                f"a folder of media needs exactly one transcript file ({', '.join(TRANSCRIPT_SUFFIXES)}); found: {found}",
                path=path,
            ) from None
        return _unlabelled(read_data(path).corpus, labels)
    suffix = path.suffix.lower()
    kind = next((k for k, suffixes in MEDIA_SUFFIXES.items() if suffix in suffixes), None)
    if kind is not None:
        raise MerkitError(
            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} file alone is not a conversation: give JSON naming it ([{{\"{kind}\": \"{path.name}\"}}]), a transcript "
            f"({', '.join(TRANSCRIPT_SUFFIXES)}), or a folder holding the media and one transcript",
            path=path,
        )
    try:
        if suffix == ".json":
            data = json.loads(path.read_text("utf-8"))
            return corpus_of_conversations(read_conversations(data), labels, path.parent, path.stem)
        if suffix == ".txt":
            return corpus_of_conversations([parse_lines(path.read_text("utf-8"), path.stem)], labels, path.parent, path.stem)
    except json.JSONDecodeError as exc:
        raise MerkitError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path=path) from None
    except UnicodeDecodeError:
        raise MerkitError("not a UTF-8 text file", path=path) from None
    except MerkitError as exc:
        raise exc.at(path) from None
    return _unlabelled(read_data(path).corpus, labels)


# ------------------------------------------------------------------ the output
class UtterancePrediction(BaseModel):
    """What the model says about one utterance."""

    dialogue_id: str
    utterance_id: str
    speaker: str
    text: str
    label: str | list[str] = Field(description="the predicted class (multi-label: every class above its threshold)")
    probabilities: dict[str, float] = Field(description="per class: softmax (single-label) or sigmoid (multi-label)")
    uncertainty: float | None = Field(None, description="higher = less certain (mean of the components); models without one give null")
    uncertainty_components: list[float] | None = Field(None, description="per modality or per class, as the model gives it")
    expert_weights: dict[str, float] | None = Field(None, description="how much each expert/modality contributed")
    modalities: list[str] = Field(description="the modalities the model had for this utterance")
    notes: dict[str, str] = Field(
        default_factory=dict,
        description="per modality: why an available medium gave no features, or that the model does not read it; "
        "'input': the turn had nothing the model reads",
    )


class PredictionResult(BaseModel):
    """Predictions for every utterance of the input, in input order."""

    model: str
    labels: list[str]
    multi_label: bool
    modalities: list[str]
    utterances: list[UtterancePrediction]

    def to_csv(self) -> str:
        """One row per utterance: ids, speaker, text, label, a ``p_<class>`` column per class, uncertainty, modalities."""
        experts = sorted({name for u in self.utterances for name in (u.expert_weights or {})})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            ["dialogue_id", "utterance_id", "speaker", "text", "label", *(f"p_{n}" for n in self.labels), "uncertainty",
             *(f"weight_{e}" for e in experts), "modalities", "notes"]
        )  # fmt: skip
        for u in self.utterances:
            label = ";".join(u.label) if isinstance(u.label, list) else u.label
            weights = u.expert_weights or {}
            writer.writerow(
                [u.dialogue_id, u.utterance_id, u.speaker, u.text, label, *(u.probabilities[n] for n in self.labels),
                 "" if u.uncertainty is None else u.uncertainty, *(weights.get(e, "") for e in experts),
                 ";".join(u.modalities), "; ".join(f"{m}: {r}" for m, r in u.notes.items())]
            )  # fmt: skip
        return buffer.getvalue()


# ------------------------------------------------------------------ the predictor
def rebuild_extractor(modality: str, entry: Mapping[str, Any], *, device: str, workers: int = 1) -> Extractor:
    """The extractor a checkpoint's feature-manifest entry records, checked against its recorded fingerprint."""
    settings = dict(entry.get("settings") or {})
    name = settings.get("extractor") or entry.get("extractor")
    recorded = settings.get("fingerprint")
    registry = available_extractors()
    if name not in registry or not recorded:
        raise MerkitError(
            f"the model's {modality} features come from {entry.get('extractor')!r} "
            f"({entry.get('source') or 'unknown source'}), which merkit cannot compute from raw input; "
            "train on features made by `merkit extract` to predict from raw conversations"
        )
    fields = registry[name].extractor_class.Settings.model_fields
    kwargs = {key: value for key, value in settings.items() if key in fields}
    if "workers" in fields:
        kwargs["workers"] = workers  # a run setting: never part of the fingerprint
    extractor = get_extractor(name, modality=modality, device=device, **kwargs)
    extractor.record_name = str(entry.get("extractor") or name)
    found = extractor.fingerprint()
    if found != recorded:
        raise MerkitError(
            f"the {modality} extractor {extractor.record_name!r} built here is not the one the model was trained with "
            f"(fingerprint {found[:12]}…, recorded {recorded[:12]}…): its weights or settings differ; "
            "install the weights the checkpoint's model.json names"
        )
    return extractor


def _absent(modality: str, count: int, dim: int, sequence: bool) -> FeatureSet:
    """A modality no utterance of the input has: every row masked."""
    values = np.zeros((0 if sequence else count, dim), dtype=np.float32)
    offsets = np.zeros(count + 1, dtype=np.int64) if sequence else None
    return FeatureSet(modality, values, np.zeros(count, dtype=bool), offsets)


class Predictor:
    """A checkpoint with the feature extractors it was trained on: raw conversations in, emotions out.

    Not thread-safe (the extractors load models lazily and hold state): serialise calls.
    """

    def __init__(
        self, checkpoint: Checkpoint, *, device: str = "auto", batch_size: int = 16, workers: int = 1,
        extractors: Mapping[str, Extractor] | None = None,
    ):  # fmt: skip
        """``extractors``: built ones to use for some modalities (the ONNX text encoders); the others are rebuilt."""
        if batch_size < 1:
            raise MerkitError("batch size must be at least 1")
        self.checkpoint = checkpoint
        self.meta = checkpoint.meta
        self.device = resolve_device(device)
        self.model = checkpoint.model.to(self.device).eval()
        self.labels = checkpoint.labels
        self.modalities = checkpoint.modalities
        self.batch_size = batch_size
        self.dims = dict(self.meta["data_spec"]["modalities"])
        self.thresholds = checkpoint_thresholds(self.meta, self.labels.names)
        self.extractors: dict[str, Extractor] = dict(extractors or {})
        # Features imported with `merkit data add-features` cannot be computed from raw input: those
        # modalities are masked (the model was trained to work without a modality) and every row says so.
        self.imported = {m: self.meta["features"][m] for m in self.modalities if self.meta["features"][m].get("extractor") == "external"}
        try:
            for modality in self.modalities:
                entry = self.meta["features"][modality]
                if modality in self.extractors or (modality in self.imported and len(self.imported) < len(self.modalities)):
                    continue
                self.extractors[modality] = rebuild_extractor(modality, entry, device=self.device, workers=workers)
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------- about the model
    def describe(self) -> dict[str, Any]:
        """Model name, labels, modalities with their extractors, versions (``GET /model``)."""
        return {
            "model": self.meta["model"],
            "labels": list(self.labels.names),
            "multi_label": self.labels.multi_label,
            "modalities": {
                m: {"extractor": self.extractors[m].record_name, "dim": self.dims[m], "level": self.extractors[m].level}
                if m in self.extractors
                else {"extractor": "external", "dim": self.dims[m], "level": self.imported[m].get("level"), "computed": False}
                for m in self.modalities
            },
            "thresholds": dict(zip(self.labels.names, self.thresholds.round(6).tolist())) if self.labels.multi_label else None,
            "trained_with_merkit": self.meta.get("merkit_version"),
            "merkit_version": __version__,
            "protocol": self.meta.get("protocol"),
            "seed": self.meta.get("seed"),
            "device": self.device,
            "backend": self.checkpoint.backend,
        }

    # -------------------------------------------------------------- prediction
    def corpus(self, conversation: Any, base_dir: str | Path | None = None) -> Corpus:
        """The input (Python objects, a path, or a :class:`Corpus`) as an unlabelled inference corpus."""
        if isinstance(conversation, Corpus):
            return _unlabelled(conversation, self.labels)
        if isinstance(conversation, (str, Path)):
            return read_input(conversation, self.labels)
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        return corpus_of_conversations(read_conversations(conversation), self.labels, base)

    def predict(
        self, conversation: Any, *, base_dir: str | Path | None = None, progress: bool = False, deadline: float | None = None
    ) -> PredictionResult:
        """Per-utterance predictions for ``conversation`` (see the module docstring for what it can be).

        ``deadline`` (a ``time.monotonic()`` value): past it, :class:`TimeLimitExceeded` is raised between
        extraction batches (the server's per-request time limit)."""
        corpus = self.corpus(conversation, base_dir)
        features, notes = {}, {}
        for modality in self.modalities:
            features[modality], notes[modality] = self._extract(corpus, modality, progress, deadline)
        check_deadline(deadline)
        dataset = self.checkpoint.dataset(corpus, features, [SPLIT])
        scored = predict(self.model, make_loader(dataset, self.batch_size), self.device, all_utterances=True, prior=self.checkpoint.prior)
        position = {utterance_id: i for i, utterance_id in enumerate(scored.utterance_ids)}
        rows, order = [], []
        for row, (d, u) in enumerate((d, u) for d in corpus.dialogues for u in d.utterances):
            used = [m for m in self.modalities if features[m].present[row]]
            said = {m: notes[m][u.id] for m in self.modalities if u.id in notes[m]}
            rows.append(self._utterance(scored, position[u.id], d.id, u, used, {**said, **self._unused_input_notes(u, used)}))
            order.append(int(u.meta.get(INPUT_POSITION, row)))
        rows = [rows[i] for i in sorted(range(len(rows)), key=order.__getitem__)]  # a flat input list's order
        return PredictionResult(
            model=self.meta["model"], labels=list(self.labels.names), multi_label=self.labels.multi_label,
            modalities=self.modalities, utterances=rows,
        )  # fmt: skip

    def _unused_input_notes(self, utterance: Utterance, used: list[str]) -> dict[str, str]:
        """Notes on media the model does not read, and on a prediction made from no input at all."""
        found: dict[str, str] = {}
        for kind in utterance.media:
            modality = MEDIA_MODALITY[kind]
            if modality in self.modalities:
                continue
            if kind == "video" and "audio" in self.modalities:
                found.setdefault(modality, "the model does not read faces; only the video's sound track was used")
            else:
                found.setdefault(modality, f"the model does not read {modality}; the {kind} file was not used")
        if not used:
            prior = "the training split's label frequencies" if self.checkpoint.prior is not None else "uniform (the checkpoint has no label prior)"
            found["input"] = (f"nothing this model reads ({', '.join(self.modalities)}) was usable: the probabilities are "
                              f"{prior}, not evidence")  # fmt: skip
        return found

    def _utterance(
        self, scored: Predictions, i: int, dialogue_id: str, utterance: Utterance, used: list[str], notes: dict[str, str]
    ) -> UtterancePrediction:
        """Row ``i`` of the model's outputs as a prediction: label (argmax, or every class above its threshold), rounded numbers."""
        names = list(self.labels.names)
        scores = scored.scores[i].astype(float)
        if self.labels.multi_label:
            label: str | list[str] = [n for n, s, t in zip(names, scores, self.thresholds, strict=True) if s > t]
        else:
            label = names[int(scores.argmax())]
        uncertainty = components = weights = None
        if scored.uncertainty is not None:
            values = np.atleast_1d(scored.uncertainty[i]).astype(float)
            uncertainty = round(float(values.mean()), 6)
            components = np.round(values, 6).tolist() if values.size > 1 else None
        if scored.expert_weights is not None and used:  # no weights for a turn with no input: there was nothing to weigh
            weights = dict(zip(scored.expert_names, np.round(scored.expert_weights[i].astype(float), 6).tolist()))
        return UtterancePrediction(
            dialogue_id=dialogue_id, utterance_id=utterance.id.removeprefix(f"{dialogue_id}/"), speaker=utterance.speaker,
            text=utterance.text, label=label, probabilities=dict(zip(names, np.round(scores, 6).tolist())),
            uncertainty=uncertainty, uncertainty_components=components, expert_weights=weights, modalities=used, notes=notes,
        )  # fmt: skip

    def _extract(self, corpus: Corpus, modality: str, progress: bool, deadline: float | None = None) -> tuple[FeatureSet, dict[str, str]]:
        """One modality's rows for every utterance, and why each utterance with the medium got none.

        Unlike :func:`merkit.features.extract.run_extraction` there is no cache or store, and a
        conversation where every file of a medium fails is masked rather than an error.
        """
        ids = [u.id for u in corpus.utterances()]
        if modality in self.imported:
            source = Path(str(self.imported[modality].get("source") or "a file")).name
            note = f"the model's {modality} features were imported ({source}); merkit cannot compute them, so they are not used"
            sequence = self.imported[modality].get("level") == "sequence"
            return _absent(modality, len(ids), self.dims[modality], sequence), dict.fromkeys(ids, note)
        extractor = self.extractors[modality]
        items = extractor.plan(corpus)
        rows: list[np.ndarray | None] = [None] * len(ids)
        reasons: dict[str, str] = {}
        todo = sorted((i for i, item in enumerate(items) if item is not None), key=lambda i: -items[i].cost)
        bar = progress_bar(len(todo), f"{extractor.record_name} {modality}", enabled=progress, leave=False)
        try:
            for start in range(0, len(todo), EXTRACT_BATCH):
                check_deadline(deadline)
                batch = todo[start : start + EXTRACT_BATCH]
                for i, row in zip(batch, extractor.encode([items[i].payload for i in batch]), strict=True):
                    if isinstance(row, Absent):
                        reasons[ids[i]] = row.reason
                    else:
                        rows[i] = row
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        sequence = extractor.level == "sequence"
        if all(row is None for row in rows):
            return _absent(modality, len(ids), self.dims[modality], sequence), reasons
        features = stack_rows(modality, rows, ids=ids, sequence=sequence, extractor=extractor.record_name)
        if features.dim != self.dims[modality]:
            raise MerkitError(
                f"the {modality} extractor gave {features.dim}-d features; the model reads {self.dims[modality]}-d"
            )
        return features, reasons

    def close(self) -> None:
        """Release the extractors' models and worker processes."""
        for extractor in self.extractors.values():
            extractor.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
