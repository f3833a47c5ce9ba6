import pytest

from merkit.data import Corpus, CorpusError, Dialogue, LabelSchema, Utterance, build_corpus
from merkit.data.corpus import build_utterance

SCHEMA = LabelSchema(names=("neutral", "joy", "anger"))


def dialogue(dialogue_id: str, *labels, prefix: str | None = None) -> Dialogue:
    prefix = prefix or dialogue_id
    return Dialogue(
        id=dialogue_id,
        utterances=tuple(Utterance(id=f"{prefix}_{i}", speaker="A", text="hi", label=l) for i, l in enumerate(labels)),
    )


def test_valid_corpus_and_stats():
    corpus = build_corpus(
        name="toy",
        labels=SCHEMA,
        dialogues=(dialogue("d1", 0, 1, 1), dialogue("d2", 2), dialogue("d3", 0, 0)),
        splits={"train": ("d1",), "valid": ("d2",), "test": ("d3",)},
    )
    stats = corpus.stats()
    assert stats["splits"]["train"] == {
        "dialogues": 1, "utterances": 3, "speakers": 1, "labels": {"neutral": 1, "joy": 2, "anger": 0}}  # fmt: skip
    assert stats["labels"] == {"neutral": 3, "joy": 2, "anger": 1}
    assert corpus.num_utterances == 6
    assert [u.id for u in corpus.utterances()][:2] == ["d1_0", "d1_1"]


def test_records_are_immutable():
    utterance = Utterance(id="u", label=1)
    with pytest.raises(Exception):
        utterance.label = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("dialogues", "splits", "message"),
    [
        ((dialogue("d1", 0, 5),), {}, "unknown label index 5"),
        ((Dialogue(id="d1", utterances=()),), {}, "empty dialogue"),
        ((dialogue("d1", 0), dialogue("d1", 1, prefix="x")), {}, "duplicate dialogue id"),
        ((dialogue("d1", 0), dialogue("d2", 1, prefix="d1")), {}, "duplicate utterance id 'd1_0'"),
        ((dialogue("d1", 0),), {"train": ("d1",), "test": ("d1",)}, "in two splits"),
        ((dialogue("d1", 0),), {"train": ("zz",)}, "unknown dialogue 'zz'"),
        ((dialogue("d1", (0, 1)),), {}, "does not fit a single-label"),
    ],
)
def test_invalid_corpora_are_refused(dialogues, splits, message):
    with pytest.raises(CorpusError, match=message):
        build_corpus(name="bad", labels=SCHEMA, dialogues=dialogues, splits=splits)


def test_multi_label_labels_are_canonical_sets():
    utterance = Utterance(id="u", label=(2, 0, 2))
    assert utterance.label == (0, 2)
    corpus = Corpus(
        name="ml",
        labels=LabelSchema(names=SCHEMA.names, multi_label=True),
        dialogues=(Dialogue(id="d", utterances=(utterance, Utterance(id="v", label=()))),),
        splits={"train": ("d",)},
    )
    assert corpus.stats()["splits"]["train"]["multi_label_utterances"] == 1


def test_unknown_label_name_lists_known_ones():
    with pytest.raises(CorpusError, match="unknown label 'happiness'; known labels: neutral, joy, anger"):
        SCHEMA.index("happiness")


def test_utterance_times_must_be_ordered():
    with pytest.raises(CorpusError, match="before start"):
        build_utterance(id="u", start=3.0, end=1.0)


def test_label_schema_needs_unique_names():
    with pytest.raises(Exception, match="duplicate class names"):
        LabelSchema(names=("a", "a"))


def test_valid_pattern_moves_matching_dialogues_into_validation_and_keeps_test():
    from merkit.data import read_data
    from merkit.errors import MerkitError

    plain = read_data("synthetic", dialogues=12).corpus.splits
    resplit = read_data("synthetic", dialogues=12, valid_pattern="syn000[1-4]").corpus.splits
    assert resplit["test"] == plain["test"]
    assert resplit["valid"] == ("syn0001", "syn0002", "syn0004", "syn0003")  # train order, then old valid
    assert set(resplit["train"]) == (set(plain["train"]) | set(plain["valid"])) - set(resplit["valid"])
    for pattern in ("^nothing", "syn", "("):
        with pytest.raises(MerkitError, match="valid_pattern"):
            read_data("synthetic", dialogues=12, valid_pattern=pattern)
