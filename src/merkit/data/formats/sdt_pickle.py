"""The multimodal feature pickles published with SDT and SURE (``iemocap_multimodal_features.pkl``:
12 items; ``meld_multimodal_features.pkl``: 13 items). See models.md §7.1–7.2."""

from __future__ import annotations

from typing import Any

from merkit.data.formats import DataBundle, Source, register_reader
from merkit.data.formats._feature_pickle import as_items, read_feature_pickle

SDT_IEMOCAP_LAYOUT = (
    "ids", "speakers", "labels", "text", "roberta2", "roberta3", "roberta4", "audio", "visual", "sentences", "train", "test",
)  # fmt: skip
SDT_MELD_LAYOUT = (*SDT_IEMOCAP_LAYOUT, "sentiment")


@register_reader
class SdtPickleReader:
    name = "sdt-pickle"
    description = "SDT/SURE multimodal feature pickle (IEMOCAP 12 items, MELD 13 items)"

    def detect(self, source: Source) -> bool:
        if not source.is_pickle():
            return False
        items = as_items(source.pickle_object)
        return items is not None and len(items) in (12, 13) and isinstance(items[3], dict)

    def read(self, source: Source, **options: Any) -> DataBundle:
        items = as_items(source.pickle_object) or ()
        layout = SDT_MELD_LAYOUT if len(items) == 13 else SDT_IEMOCAP_LAYOUT
        return read_feature_pickle(source, layout, meld=len(items) == 13, extractor_prefix="published:sdt", **options)
