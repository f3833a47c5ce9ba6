"""Speaker-independent K-fold splits of a corpus: no speaker (or dialogue) in two parts.

Dialogues are grouped so that a speaker never crosses a part: with ``group_by="speaker"`` the
groups are the connected components of "shares a speaker" (one actor's clips in RAVDESS, one
session's pair of actors in IEMOCAP); ``"dialogue"`` makes each dialogue its own group. The
groups, in sorted order of their first speaker, are cut into K contiguous parts of about equal
utterance counts, so RAVDESS's 24 actors give the 6 folds of 4 consecutive actors (2 male +
2 female) that its users report [R]. (scikit-learn's ``GroupKFold`` deals groups of equal size
out round-robin, which on RAVDESS puts only odd, i.e. male, or only even actors in a part.)
Fold ``i`` tests on part ``i``, selects on part ``i + 1`` (mod K) and trains on the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from merkit.data.corpus import Corpus
from merkit.errors import MerkitError

GROUPINGS = ("speaker", "dialogue")


@dataclass(frozen=True)
class Fold:
    index: int
    corpus: Corpus
    groups: dict[str, list[str]]  # split → the speakers (or dialogues) it holds


def dialogue_groups(corpus: Corpus, group_by: str = "speaker") -> list[list[str]]:
    """Dialogue ids grouped so that no speaker is in two groups (``speaker``), or one per dialogue."""
    if group_by not in GROUPINGS:
        raise MerkitError(f"--group-by {group_by!r}: choose one of {', '.join(GROUPINGS)}")
    ids = [d.id for d in corpus.dialogues]
    parent = {d: d for d in ids}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    if group_by == "speaker":
        owner: dict[str, str] = {}
        for dialogue in corpus.dialogues:
            for speaker in {u.speaker for u in dialogue.utterances if u.speaker}:
                if speaker in owner:
                    parent[root(dialogue.id)] = root(owner[speaker])
                else:
                    owner[speaker] = dialogue.id
    groups: dict[str, list[str]] = {}
    for dialogue_id in ids:
        groups.setdefault(root(dialogue_id), []).append(dialogue_id)
    return list(groups.values())


def make_folds(corpus: Corpus, k: int, group_by: str = "speaker") -> list[Fold]:
    """K corpora with the same dialogues, each with its own train/valid/test parts (see the module doc)."""
    if k < 3:
        raise MerkitError(f"--folds {k}: at least 3 are needed (a test part, a validation part and training)")
    by_id = {d.id: d for d in corpus.dialogues}
    labelled = {d.id for d in corpus.dialogues if any(u.label is not None for u in d.utterances)}
    groups = [g for g in dialogue_groups(corpus, group_by) if labelled.intersection(g)]
    if len(groups) < k:
        raise MerkitError(f"--folds {k} needs at least {k} {group_by} groups; the labelled data has {len(groups)}")

    def name(group: list[str]) -> str:
        speakers = sorted({u.speaker for d in group for u in by_id[d].utterances if u.speaker})
        return speakers[0] if group_by == "speaker" and speakers else sorted(group)[0]

    groups.sort(key=name)
    sizes = [sum(len(by_id[d]) for d in g) for g in groups]
    total, parts, running = sum(sizes), [[] for _ in range(k)], 0
    for group, size in zip(groups, sizes):
        part = min(k - 1, int(k * (running + size / 2) / total))
        parts[part].append(group)
        running += size
    if any(not p for p in parts):
        raise MerkitError(f"--folds {k}: the {len(groups)} {group_by} groups are too uneven to fill {k} parts")
    folds = []
    for i in range(k):
        roles = {"test": [i], "valid": [(i + 1) % k], "train": [j for j in range(k) if j not in (i, (i + 1) % k)]}
        splits = {split: tuple(d for j in members for g in parts[j] for d in g) for split, members in roles.items()}
        fold_corpus = corpus.model_copy(update={"splits": splits})
        folds.append(Fold(i, fold_corpus, {split: [name(g) for j in members for g in parts[j]] for split, members in roles.items()}))
    return folds
