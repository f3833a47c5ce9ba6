"""Label sets of the published corpora, in their readers' class order.

Readers build their :class:`~merkit.data.corpus.LabelSchema` from these, and evaluation recognises a
checkpoint's corpus by them, without importing a reader."""

IEMOCAP_EMOTIONS = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
MELD_EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
MELD_SENTIMENTS = ("neutral", "positive", "negative")
