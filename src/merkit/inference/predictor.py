"""The :class:`Predictor`: a checkpoint with the feature extractors it was trained on; conversations in, emotions out.

It knows no backend and no recording: :func:`merkit.load` (:mod:`merkit.loading`) chooses PyTorch or
ONNX Runtime and hands over the checkpoint, and :func:`merkit.recording.predict_recording` turns a
raw recording into a conversation for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from merkit._version import __version__
from merkit.checkpoint import Checkpoint
from merkit.data.corpus import Corpus, Utterance
from merkit.data.features import FeatureSet
from merkit.deadlines import check_deadline
from merkit.devices import resolve_device
from merkit.errors import MerkitError
from merkit.features.registry import Extractor
from merkit.inference.extractors import absent_features, extract_features, rebuild_extractor
from merkit.inference.results import PredictionResult, UtterancePrediction
from merkit.inference.schema import read_conversations
from merkit.inference.sources import INPUT_POSITION, SPLIT, corpus_of_conversations, read_input, unlabelled_corpus
from merkit.prediction import Predictions, make_loader, predict
from merkit.thresholds import checkpoint_thresholds

MEDIA_MODALITY = {"audio": "audio", "video": "visual", "image": "visual", "frames": "visual"}  # what each medium gives


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
        self.name: str = self.meta["model"]  # what outputs call the model: the architecture, or the zoo entry's name (merkit.load)
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
            "model": self.name,
            "architecture": self.meta["model"],
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
            return unlabelled_corpus(conversation, self.labels)
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
            model=self.name, labels=list(self.labels.names), multi_label=self.labels.multi_label,
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
        """One modality's rows for every utterance and the notes on missing ones; imported features are all masked."""
        if modality in self.imported:
            ids = [u.id for u in corpus.utterances()]
            source = Path(str(self.imported[modality].get("source") or "a file")).name
            note = f"the model's {modality} features were imported ({source}); merkit cannot compute them, so they are not used"
            sequence = self.imported[modality].get("level") == "sequence"
            return absent_features(modality, len(ids), self.dims[modality], sequence), dict.fromkeys(ids, note)
        return extract_features(self.extractors[modality], corpus, modality, self.dims[modality], progress=progress, deadline=deadline)

    def close(self) -> None:
        """Release the extractors' models and worker processes."""
        for extractor in self.extractors.values():
            extractor.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
