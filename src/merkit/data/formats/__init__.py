"""Readers: one module per input format, registered by name.

Each reader is a class with a ``name``, a one-line ``description``, ``detect(source)``
(cheap: does this path look like my format?) and ``read(source, **options)`` returning
a :class:`DataBundle`. ``read_data(path, format="auto")`` picks the reader that detects
the input; a user names one explicitly with ``--format``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol

from merkit.data.corpus import Corpus
from merkit.data.features import FeatureSet
from merkit.data.safe_pickle import load_pickle
from merkit.errors import MerkitError

_READER_MODULES = (
    "store_dir",
    "ravdess",
    "meld_csv",
    "iemocap_cosmic",
    "goemotions_tsv",
    "sdt_pickle",
    "dialoguegcn_pickle",
    "m3ed_torch",
    "mosei_pickle",
    "image_folder",
    "user_table",
    "synthetic",
)


@dataclass(frozen=True)
class DataBundle:
    """What a reader returns: the corpus and any features the input carried, by modality."""

    corpus: Corpus
    features: dict[str, FeatureSet] = field(default_factory=dict)


class Source:
    """The input path given to readers, with the (restricted) pickle load shared by all of them."""

    def __init__(self, spec: str | Path, *, trust_pickle: bool = False):
        self.spec = str(spec)
        self.path = Path(spec)
        self.trust_pickle = trust_pickle

    @cached_property
    def pickle_object(self) -> Any:
        return load_pickle(self.path, trust=self.trust_pickle)

    def is_pickle(self) -> bool:
        return self.path.is_file() and self.path.suffix.lower() in {".pkl", ".pickle", ".p"}


class Reader(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]

    def detect(self, source: Source) -> bool: ...

    def read(self, source: Source, **options: Any) -> DataBundle: ...


_REGISTRY: dict[str, type] = {}


def register_reader(cls: type) -> type:
    """Class decorator: make a reader available under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"reader {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_readers() -> dict[str, type]:
    for module in _READER_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return _REGISTRY


def available_formats() -> dict[str, str]:
    """Format name → description, in registration order."""
    return {name: cls.description for name, cls in _load_readers().items()}


def get_reader(name: str) -> Reader:
    readers = _load_readers()
    if name not in readers:
        raise MerkitError(f"unknown format {name!r}; choose one of: auto, {', '.join(readers)}")
    return readers[name]()


def detect_format(source: Source) -> str:
    for name, cls in _load_readers().items():
        if cls().detect(source):
            return name
    raise MerkitError(
        "cannot tell the format of this input; name it with --format (one of: " + ", ".join(_load_readers()) + ")",
        path=source.spec,
    )


def read_data(path: str | Path, format: str = "auto", *, trust_pickle: bool = False, **options: Any) -> DataBundle:
    """Read any supported input into a :class:`DataBundle`.

    >>> bundle = read_data("synthetic", dialogues=12)
    >>> bundle.corpus.labels.num_classes
    6
    """
    valid_pattern = options.pop("valid_pattern", None)
    source = Source(path, trust_pickle=trust_pickle)
    if format == "auto":
        if not source.path.exists() and not get_reader("synthetic").detect(source):
            raise MerkitError("no such file or directory", path=source.spec)
        format = detect_format(source)
    reader = get_reader(format)
    if not reader.detect(source) and source.path.exists():
        raise MerkitError(f"this input does not look like the {format!r} format ({reader.description})", path=source.spec)
    try:
        bundle = reader.read(source, **options)
        return bundle if valid_pattern is None else resplit_validation(bundle, str(valid_pattern))
    except MerkitError as exc:
        raise exc.at(source.spec) from None
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise MerkitError(f"option not understood by the {format!r} reader: {exc}") from None
        raise


def resplit_validation(bundle: DataBundle, pattern: str) -> DataBundle:
    """Make the train/valid dialogues whose id matches ``pattern`` the validation split and the
    rest of them the training split; test is untouched. For a validation split of held-out
    speakers, e.g. ``valid_pattern=^Ses04`` on IEMOCAP (whose standard valid ids share training's
    sessions). Every reader takes it (``--option valid_pattern=REGEX``)."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise MerkitError(f"valid_pattern {pattern!r} is not a regular expression: {exc}") from None
    splits = bundle.corpus.splits
    pool = [*splits.get("train", ()), *splits.get("valid", ())]
    valid = tuple(d for d in pool if regex.search(d))
    if not valid or len(valid) == len(pool):
        raise MerkitError(f"valid_pattern {pattern!r} matches {len(valid)} of the {len(pool)} train/valid dialogues; it must leave some for each")
    train = tuple(d for d in pool if not regex.search(d))
    corpus = bundle.corpus.model_copy(update={"splits": {**splits, "train": train, "valid": valid}})
    return DataBundle(corpus=corpus, features=bundle.features)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["seed=3", "multi_label=true"]`` into typed keyword options."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise MerkitError(f"option {pair!r} is not of the form key=value")
        options[key.strip().replace("-", "_")] = _parse_value(raw.strip())
    return options


def _parse_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


