"""merkit: multimodal emotion recognition in conversations.

Readers turn corpora and published feature files into a :class:`~merkit.data.corpus.Corpus`
and a safe on-disk feature store; models, training, evaluation and inference build on them.
"""

__version__ = "0.1.0"
