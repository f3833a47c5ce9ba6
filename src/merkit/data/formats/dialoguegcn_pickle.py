"""DialogueGCN / MMGCN feature pickles: ``IEMOCAP_features.pkl`` (9 items) and
``MELD_features_raw1.pkl`` (10 items). See models.md §7.3."""

from __future__ import annotations

from typing import Any

from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.formats._feature_pickle import as_items, read_feature_pickle

DIALOGUEGCN_LAYOUT = ("ids", "speakers", "labels", "text", "audio", "visual", "sentences", "train", "test")
MMGCN_MELD_LAYOUT = (*DIALOGUEGCN_LAYOUT, "sentiment")


@register_reader
class DialogueGcnPickleReader:
    name = "dialoguegcn-pickle"
    description = "DialogueGCN/MMGCN feature pickle (IEMOCAP 9 items, MELD 10 items)"

    def detect(self, source: Source) -> bool:
        if not source.is_pickle():
            return False
        items = as_items(source.pickle_object)
        return items is not None and len(items) in (9, 10) and isinstance(items[3], dict)

    def read(self, source: Source, **options: Any) -> DataBundle:
        items = as_items(source.pickle_object) or ()
        layout = MMGCN_MELD_LAYOUT if len(items) == 10 else DIALOGUEGCN_LAYOUT
        return read_feature_pickle(source, layout, meld=len(items) == 10, extractor_prefix="published:dialoguegcn", **options)
