"""Corpus records, readers of corpora and feature files, and the safe feature store."""

from merkit.data.corpus import MODALITIES, SPLITS, Corpus, CorpusError, Dialogue, LabelSchema, Utterance, build_corpus
from merkit.data.features import FeatureSet, stack_rows
from merkit.data.formats import DataBundle, available_formats, read_data
from merkit.data.store import FeatureStore, open_store, write_store

__all__ = [
    "MODALITIES",
    "SPLITS",
    "Corpus",
    "CorpusError",
    "DataBundle",
    "Dialogue",
    "FeatureSet",
    "FeatureStore",
    "LabelSchema",
    "Utterance",
    "available_formats",
    "build_corpus",
    "open_store",
    "read_data",
    "stack_rows",
    "write_store",
]
