"""Feature extraction: the extractor registry, text encoders, the cached/sharded driver, fine-tuning.

>>> from merkit.features import available_extractors
>>> sorted(available_extractors("text"))
['hf', 'minilm', 'mpnet']

Heavy packages (torch models, transformers) are imported only when an extractor runs.
"""

from merkit.features.registry import (
    Extractor,
    ExtractorInfo,
    ExtractorSettings,
    WorkItem,
    available_extractors,
    get_extractor,
    register_extractor,
)

__all__ = [
    "Extractor",
    "ExtractorInfo",
    "ExtractorSettings",
    "WorkItem",
    "available_extractors",
    "get_extractor",
    "register_extractor",
]
