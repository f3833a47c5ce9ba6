"""Speaker-independent K-fold splits of a corpus: no speaker (or dialogue) in two parts.

Dialogues are grouped so that a speaker never crosses a part: with ``group_by="speaker"`` the
groups are the connected components of "shares a speaker" (one actor's clips in RAVDESS, one
session's pair of actors in IEMOCAP); ``"dialogue"`` makes each dialogue its own group. The
groups, in sorted order of their first speaker, are cut into K contiguous parts of about equal
utterance counts, so RAVDESS's 24 actors give the 6 folds of 4 consecutive actors (2 male +
2 female) that its users report [R]. (scikit-learn's ``GroupKFold`` deals groups of equal size
out round-robin, which on RAVDESS puts only odd, i.e. male, or only even actors in a part.)
Fold ``i`` tests on part ``i``, selects on part ``i + 1`` (mod K) and trains on the rest.

Contiguous parts keep whatever the speaker order carries: in CK+ the subjects above S138 posed
mostly *contempt*, so its last part holds most of that class and the fold trained without it
fails on it. ``assignment="stratified"`` deals the groups out with scikit-learn's
``StratifiedGroupKFold`` (shuffled, seed 0 [R]) so that each part has about the corpus's class mix;
either way a fold whose training holds under half its share of a class gets a note.

A few uneven groups cannot fill K contiguous parts (a 10-speaker corpus where one speaker has
half the clips leaves parts empty at K = 10). ``folds="loso"`` is leave one group out: one part
per group, so K is the number of groups (leave-one-speaker-out with ``group_by="speaker"``,
leave-one-dialogue-out with ``"dialogue"``). Its validation part is the next group (mod K), the
K-fold rule above [R]: the test group is never seen in selection, every group validates once,
and one rule serves both schemes (a nested search over the other K - 1 groups would cost K - 1
times as much).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from merkit.data.corpus import Corpus
from merkit.errors import MerkitError

GROUPINGS = ("speaker", "dialogue")
ASSIGNMENTS = ("contiguous", "stratified")
LOSO = "loso"  # --folds loso: leave one group out


@dataclass(frozen=True)
class Fold:
    index: int
    corpus: Corpus
    groups: dict[str, list[str]]  # split → the speakers (or dialogues) it holds
    notes: tuple[str, ...] = ()  # classes the fold's training split holds too few of


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


def make_folds(corpus: Corpus, folds: int | str, group_by: str = "speaker", assignment: str = "contiguous") -> list[Fold]:
    """K corpora with the same dialogues, each with its own train/valid/test parts; ``folds`` is K
    (an integer, or its digits as ``--folds`` gives them) or ``"loso"`` (see the module doc)."""
    if assignment not in ASSIGNMENTS:
        raise MerkitError(f"--fold-assignment {assignment!r}: choose one of {', '.join(ASSIGNMENTS)}")
    k = _fold_count(folds)
    if k is None and assignment == "stratified":
        raise MerkitError("--folds loso puts each group in a part of its own; --fold-assignment stratified has nothing to deal, leave it out")
    by_id = {d.id: d for d in corpus.dialogues}
    labelled = {d.id for d in corpus.dialogues if any(u.label is not None for u in d.utterances)}
    groups = [g for g in dialogue_groups(corpus, group_by) if labelled.intersection(g)]
    if len(groups) < (k or 3):
        raise MerkitError(f"--folds {folds} needs at least {k or 3} {group_by} groups; the labelled data has {len(groups)}")

    def name(group: list[str]) -> str:
        speakers = sorted({u.speaker for d in group for u in by_id[d].utterances if u.speaker})
        return speakers[0] if group_by == "speaker" and speakers else sorted(group)[0]

    groups.sort(key=name)
    loso = k is None
    if loso:
        k, parts = len(groups), [[g] for g in groups]
    elif assignment == "stratified":
        parts = _stratified_parts(groups, by_id, k)
    else:
        parts = _contiguous_parts(groups, by_id, k)
    if any(not p for p in parts):
        sizes = {name(g): sum(len(by_id[d]) for d in g) for g in groups}
        largest = max(sizes, key=sizes.get)
        ways = ["--folds loso (one fold per group)", *(["--fold-assignment stratified"] if assignment == "contiguous" else []), "fewer folds"]
        raise MerkitError(
            f"--folds {k}: the {len(groups)} {group_by} groups are too uneven to fill {k} {assignment} parts "
            f"({largest} alone holds {sizes[largest]} of the {sum(sizes.values())} utterances); use {', or '.join(ways)}"
        )
    folds_of = []
    for i in range(k):
        roles = {"test": [i], "valid": [(i + 1) % k], "train": [j for j in range(k) if j not in (i, (i + 1) % k)]}
        splits = {split: tuple(d for j in members for g in parts[j] for d in g) for split, members in roles.items()}
        fold_corpus = corpus.model_copy(update={"splits": splits})
        groups_of = {split: [name(g) for j in members for g in parts[j]] for split, members in roles.items()}
        notes = _scarce_classes(corpus, splits["train"], by_id, (k - 2) / k, hint=not loso and assignment == "contiguous")
        folds_of.append(Fold(i, fold_corpus, groups_of, notes))
    return folds_of


def _fold_count(folds: int | str) -> int | None:
    """K from ``--folds`` (an integer, at least 3), or None for ``loso`` (one fold per group)."""
    if folds == LOSO:
        return None
    try:
        k = int(folds)
    except ValueError:
        raise MerkitError(f"--folds {folds!r}: give a number of parts (e.g. 6) or loso (leave one group out: one fold per group)") from None
    if k < 3:
        raise MerkitError(f"--folds {k}: at least 3 are needed (a test part, a validation part and training)")
    return k


def _contiguous_parts(groups: list[list[str]], by_id: dict, k: int) -> list[list[list[str]]]:
    sizes = [sum(len(by_id[d]) for d in g) for g in groups]
    total, parts, running = sum(sizes), [[] for _ in range(k)], 0
    for group, size in zip(groups, sizes):
        parts[min(k - 1, int(k * (running + size / 2) / total))].append(group)
        running += size
    return parts


def _stratified_parts(groups: list[list[str]], by_id: dict, k: int) -> list[list[list[str]]]:
    """Groups dealt into ``k`` parts of about the corpus's class mix (one row per labelled utterance)."""
    from sklearn.model_selection import StratifiedGroupKFold

    rows = [(index, u.label_indices()[0]) for index, g in enumerate(groups) for d in g for u in by_id[d].utterances if u.label_indices()]
    group_ids, labels = [r[0] for r in rows], [r[1] for r in rows]
    parts: list[list[list[str]]] = [[] for _ in range(k)]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=0)
    for part, (_, held) in enumerate(splitter.split(labels, labels, groups=group_ids)):
        for index in sorted({group_ids[i] for i in held}):
            parts[part].append(groups[index])
    return parts


def _scarce_classes(corpus: Corpus, train: tuple[str, ...], by_id: dict, share: float, hint: bool) -> tuple[str, ...]:
    """Notes on the classes whose training share is under half the expected ``share`` of their items
    (``hint``: say that stratified assignment would balance them)."""
    names = corpus.labels.names
    every = Counter(i for d in by_id.values() for u in d.utterances for i in u.label_indices())
    trained = Counter(i for d in train for u in by_id[d].utterances for i in u.label_indices())
    remedy = "; --fold-assignment stratified balances the classes" if hint else ""
    return tuple(
        f"training holds {trained[c]} of the {every[c]} {names[c]!r} items{remedy}"
        for c in sorted(every) if trained[c] < 0.5 * share * every[c]
    )  # fmt: skip
