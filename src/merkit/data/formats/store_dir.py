"""A merkit feature store directory as an input: its corpus and features, read back."""

from __future__ import annotations

from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.store import is_store, open_store


@register_reader
class StoreReader:
    name = "store"
    description = "a merkit feature store directory (made by `merkit data convert` or `merkit extract`)"

    def detect(self, source: Source) -> bool:
        return source.path.is_dir() and is_store(source.path)

    def read(self, source: Source) -> DataBundle:
        store = open_store(source.path)
        return DataBundle(store.corpus, store.all_features())
