"""merkit: multimodal emotion recognition in conversations.

Readers turn corpora and published feature files into a :class:`~merkit.data.corpus.Corpus`
and a safe on-disk feature store; models, training, evaluation and inference build on them.
"""

from merkit._version import __version__  # noqa: F401  (the public merkit.__version__)


def __getattr__(name: str):
    """``merkit.load`` imports the inference stack (torch, the extractors) only when first used."""
    if name == "load":
        from merkit.loading import load

        return load
    raise AttributeError(f"module 'merkit' has no attribute {name!r}")
