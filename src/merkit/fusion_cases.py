"""The recordings that fit and measure the fused default (issue #38), and the fitting itself.

Two kinds of case, each with a validation part (which alone chooses the fusion's α, γ, θ and T) and a test part
(scored once, after):

* **RAVDESS recordings** — the voice carries the emotion, the words (two fixed sentences) do not: each actor's
  clips in a shuffled order with 1 s pauses become one recording (the benchmark of ``benchmarks/recording_ravdess.py``;
  validation: every clip of actors 17–18, test: the neutral, happy, sad and angry clips of actors 19–24).
* **MELD dialogues read by espeak-ng** — the words carry the emotion, the voice (a flat synthetic one, one voice per
  speaker) does not: every line of a dialogue spoken, 1 s pauses between lines, one recording per dialogue (validation:
  a seeded sample of MELD's dev dialogues, test: of its test dialogues; the text model never trained on either).

Each line (clip) is matched with the speech segment whose middle falls inside it; a line without exactly one segment
counts as wrong for every track. Scores are over the shared labels.

The voice's typicality reference (:mod:`merkit.typicality`) is fitted first, on the voice model's own feature store:
clips of some of its training actors, calibrated on others of them — never a fusion validation or test actor.
"""

from __future__ import annotations

import datetime
import json
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from merkit._version import __version__
from merkit.errors import MerkitError
from merkit.fusion import TRACKS, TYPICALITY, FusedPredictor, FusionSpec, fit_temperature, pool, spread
from merkit.io import atomic_write_json, write_joined_wav
from merkit.typicality import Typicality
from merkit.zoo import FUSION, ZOO_DIR, ModelCard, TrainingData, write_card

RATE = 16_000
PAUSE = 1.0
RAVDESS_CODES = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
ESPEAK_VOICES = ("en-us", "en-us+f3", "en+m3", "en+f4", "en-gb", "en+m7")
ALPHAS = tuple(round(a, 2) for a in np.arange(0.0, 1.0001, 0.05))
GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
FLOORS = (0.0, 0.005, 0.01, 0.02, 0.05)  # typicality floors θ; 0.005 is just above 1/241, beyond every calibration row
TOLERANCE = 1.0  # points of accuracy the fused track may fall below the better track in a validation group


@dataclass
class Recording:
    path: Path
    spans: list[tuple[float, float]]
    truth: list[str]  # shared label per line


@dataclass
class Case:
    name: str
    recordings: list[Recording] = field(default_factory=list)


def ravdess_case(name: str, data: Path, actors: Sequence[int], out: Path, voice_map: dict[str, str | None],
                 emotions: Sequence[str] | None = None) -> Case:  # fmt: skip
    """One recording per actor of their clips (of ``emotions``, default all) in a shuffled order."""
    from merkit.features.media import decode_audio

    case = Case(name)
    out.mkdir(parents=True, exist_ok=True)
    for actor in actors:
        clips = []
        for path in sorted((data / "audio" / f"Actor_{actor:02d}").glob("*.flac")):
            emotion = RAVDESS_CODES[path.stem.split("-")[2]]
            if (emotions is None or emotion in emotions) and voice_map.get(emotion) is not None:
                clips.append((path, voice_map[emotion]))
        if not clips:
            raise MerkitError(f"no RAVDESS clips of actor {actor}", path=data / "audio")
        random.Random(actor).shuffle(clips)
        target = out / f"actor{actor:02d}.wav"
        spans = write_joined_wav(target, [decode_audio(str(p), sample_rate=RATE) for p, _ in clips], PAUSE, RATE)
        case.recordings.append(Recording(target, spans, [label for _, label in clips]))
    return case


def espeak_case(name: str, meld: Path, split: str, dialogues: int, seed: int, out: Path) -> Case:
    """A seeded sample of MELD ``split`` dialogues, each read by espeak-ng (one voice per speaker) as one recording."""
    from merkit.data.formats import read_data
    from merkit.features.media import decode_audio

    program = shutil.which("espeak-ng")
    if program is None:
        raise MerkitError("the text-bearing case needs espeak-ng (apt-get install espeak-ng)")
    corpus = read_data(meld).corpus
    ids = sorted(corpus.splits[split])
    chosen = sorted(random.Random(seed).sample(ids, min(dialogues, len(ids))))
    by_id = {d.id: d for d in corpus.dialogues}
    case = Case(name)
    out.mkdir(parents=True, exist_ok=True)
    for dialogue_id in chosen:
        dialogue = by_id[dialogue_id]
        voices: dict[str, str] = {}
        pieces, truth = [], []
        for i, utterance in enumerate(dialogue.utterances):
            if not utterance.text.strip() or utterance.label is None:
                continue
            voice = voices.setdefault(utterance.speaker, ESPEAK_VOICES[len(voices) % len(ESPEAK_VOICES)])
            line = out / f"{dialogue_id}-{i}.wav"
            subprocess.run([program, "-v", voice, "-w", str(line), utterance.text], check=True, capture_output=True, timeout=60)
            pieces.append(decode_audio(str(line), sample_rate=RATE))
            line.unlink()
            truth.append(corpus.labels.names[utterance.label] if isinstance(utterance.label, int) else str(utterance.label))
        if pieces:
            target = out / f"dialogue{dialogue_id}.wav"
            case.recordings.append(Recording(target, write_joined_wav(target, pieces, PAUSE, RATE), truth))
    return case


@dataclass
class Rows:
    """Per line of a case: the truth, each track's shared-label probabilities (None: no input, or the line was missed),
    each track's spread over the line's recording (:func:`merkit.fusion.spread`), the voice's typicality in the line's
    segment (1: not measured), and the recording's number."""

    truth: list[str] = field(default_factory=list)
    words: list[np.ndarray | None] = field(default_factory=list)
    voice: list[np.ndarray | None] = field(default_factory=list)
    words_spread: list[float] = field(default_factory=list)
    voice_spread: list[float] = field(default_factory=list)
    typicality: list[float] = field(default_factory=list)
    matched: list[bool] = field(default_factory=list)
    recording: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        arrays = {k: [None if r is None else r.round(8).tolist() for r in getattr(self, k)] for k in TRACKS}
        plain = ("truth", "words_spread", "voice_spread", "typicality", "matched", "recording")
        return {**arrays, **{k: getattr(self, k) for k in plain}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Rows":
        arrays = {k: [None if r is None else np.asarray(r) for r in data[k]] for k in TRACKS}
        return cls(**{**data, **arrays})


def track_rows(fused: FusedPredictor, case: Case, log: Callable[[str], None] = lambda line: None, cache: Path | None = None) -> Rows:
    """Both tracks for every line of the case's recordings (the transcripts are cached, so a re-run does not transcribe
    again; with ``cache``, the rows themselves, keyed by the two models' weights)."""
    if cache is not None and cache.is_file():
        return Rows.from_json(json.loads(cache.read_text()))
    rows = Rows()
    for number, recording in enumerate(case.recordings):
        found = fused.tracks(recording.path, cache=True)
        words_spread, voice_spread = spread(found.words), spread(found.voice)
        middles = [(s.start + s.end) / 2 for s in found.timeline.segments]
        for (start, end), truth in zip(recording.spans, recording.truth, strict=True):
            inside = [i for i, m in enumerate(middles) if start <= m <= end]
            one = len(inside) == 1
            rows.truth.append(truth)
            rows.matched.append(one)
            rows.words.append(found.words[inside[0]] if one else None)
            rows.voice.append(found.voice[inside[0]] if one else None)
            rows.words_spread.append(words_spread)
            rows.voice_spread.append(voice_spread)
            rows.typicality.append((found.typicality[inside[0]] or 1.0) if one else 1.0)
            rows.recording.append(number)
        log(f"{case.name}: {recording.path.name}, {len(recording.truth)} lines, {len(found.timeline.segments)} segments")
    if cache is not None:
        atomic_write_json(cache, rows.to_json())
    return rows


def labels_of(rows: Rows, which: str, labels: list[str], spec: FusionSpec | None = None) -> list[str]:
    """Each line's label by one track (``words``, ``voice``) or ``fused`` (by ``spec``); ``-`` where it gave none."""
    found = []
    for w, v, sw, sv, t in zip(rows.words, rows.voice, rows.words_spread, rows.voice_spread, rows.typicality, strict=True):
        if which == "fused":
            row = pool(w, v, spec, sw, sv, t) if (w is not None or v is not None) else None
        else:
            row = w if which == "words" else v
        found.append("-" if row is None else labels[int(np.argmax(row))])
    return found


def scores_of(truth: Sequence[str], predicted: Sequence[str], labels: list[str]) -> dict[str, float]:
    """Accuracy, weighted and macro F1 (in %) over the classes the truth holds."""
    from sklearn.metrics import accuracy_score, f1_score

    present = sorted(set(truth), key=labels.index)
    return {
        "accuracy": round(100 * accuracy_score(truth, predicted), 2),
        "weighted_f1": round(100 * f1_score(truth, predicted, labels=present, average="weighted", zero_division=0), 2),
        "macro_f1": round(100 * f1_score(truth, predicted, labels=present, average="macro", zero_division=0), 2),
    }


def scores(rows: Rows, which: str, labels: list[str], spec: FusionSpec | None = None) -> dict[str, float]:
    return scores_of(rows.truth, labels_of(rows, which, labels, spec), labels)


def halves(rows: Rows) -> list[Rows]:
    """A case's lines in two groups, its even- and odd-numbered recordings (RAVDESS: one actor each)."""
    parts = []
    for parity in (0, 1):
        keep = [i for i, number in enumerate(rows.recording) if number % 2 == parity]
        parts.append(Rows(**{k: [getattr(rows, k)[i] for i in keep] for k in Rows.__dataclass_fields__}))
    return [part for part in parts if part.truth]


def choose(valid: dict[str, Rows], spec: FusionSpec) -> FusionSpec:
    """α, γ and θ on the validation rows alone, then T by the NLL of their lines with both tracks.

    Each rule's *worst gap* is the lowest, over the groups (each case's recordings in two :func:`halves`), of its
    fused accuracy minus the better single track's there. Among the rules within ``TOLERANCE`` of the better track in
    every group, the simplest (smaller γ, then smaller θ) with the best mean fused weighted F1 (then α nearer 0.5); if
    none is, the best worst gap."""
    labels = spec.labels
    groups = {f"{name} {i}": part for name, rows in valid.items() for i, part in enumerate(halves(rows))}
    best_track = {g: max(scores(rows, track, labels)["accuracy"] for track in TRACKS) for g, rows in groups.items()}
    grid = {}
    for floor in FLOORS if spec.typicality is not None else (0.0,):
        for gamma in GAMMAS:
            for alpha in ALPHAS:
                trial = spec.model_copy(update={"alpha": alpha, "gamma": gamma, "typicality_floor": floor})
                worst = min(scores(rows, "fused", labels, trial)["accuracy"] - best_track[g] for g, rows in groups.items())
                mean = float(np.mean([scores(rows, "fused", labels, trial)["weighted_f1"] for rows in valid.values()]))
                grid[(alpha, gamma, floor)] = (round(worst, 2), round(mean, 2))
    simplest = lambda k: (-k[1], -k[2], grid[k][1], -abs(k[0] - 0.5))  # noqa: E731
    within = [k for k, (worst, _) in grid.items() if worst >= -TOLERANCE]
    alpha, gamma, floor = max(within, key=simplest) if within else max(grid, key=lambda k: (grid[k][0], *simplest(k)))
    chosen = spec.model_copy(update={"alpha": alpha, "gamma": gamma, "typicality_floor": floor})
    both = [(w, v, (sw, sv, t), labels.index(truth)) for rows in valid.values()
            for w, v, sw, sv, t, truth in zip(rows.words, rows.voice, rows.words_spread, rows.voice_spread, rows.typicality, rows.truth, strict=True)
            if w is not None and v is not None]  # fmt: skip
    words, voice, context = (np.stack([b[i] for b in both]) for i in range(3))
    temperature = fit_temperature(words, voice, context, np.array([b[3] for b in both]), chosen)
    selection = {
        "criterion": f"the worst gap over the groups (each validation case's recordings in two halves) of the fused accuracy to the "
                     f"better single track; among the rules within {TOLERANCE} point of it everywhere, the smallest gamma, then the "
                     "smallest floor, then the best mean weighted F1",
        "groups_best_track_accuracy": best_track,
        "within_tolerance": len(within),
        "valid": {name: scores(rows, "fused", labels, chosen) for name, rows in valid.items()},
        "worst_gap_and_mean_weighted_f1_by_alpha_gamma_floor": {f"{a} {g} {f}": list(v) for (a, g, f), v in grid.items()},
    }  # fmt: skip
    return chosen.model_copy(update={"temperature": temperature, "selection": selection})


def fit_typicality(plan: dict[str, Any], work: Path, fingerprint: str | None) -> tuple[Typicality, dict[str, Any]]:
    """The voice's typicality reference from the voice model's own feature store (``WORK/stores/STORE``, left by its
    build): fitted on the clips of ``fit_actors``, calibrated on those of ``calibration_actors`` (both of its training
    split: never a fusion validation or test actor). ``fingerprint``: the voice model's feature fingerprint, which the
    store's must equal."""
    from merkit.data.formats import read_data

    store = Path(work) / "stores" / plan["store"]
    if not (store / "manifest.json").is_file():
        raise MerkitError("the voice's typicality is fitted on the voice model's feature store: build it first "
                          "(merkit zoo build --only voice-ravdess)", path=store)  # fmt: skip
    bundle = read_data(store)
    features = bundle.features["audio"]
    if features.settings.get("fingerprint") != fingerprint:
        raise MerkitError("the store's audio features were not made by the voice model's extractor (fingerprints differ)", path=store)
    actors = np.array([int(u.meta["actor"]) for u in bundle.corpus.utterances()])
    part = lambda chosen: features.values[np.isin(actors, chosen) & features.present]  # noqa: E731
    reference = Typicality.fit(part(plan["fit_actors"]), part(plan["calibration_actors"]), int(plan["dims"]))
    return reference, {**plan, "fit_rows": int(len(part(plan["fit_actors"]))), "calibration_rows": len(reference.calibration)}


def fit_fusion(raw: dict[str, Any], recipe_path: Path, data: Path, *, out: Path, work: Path, budget: str = "full",
               log: Callable[[str], None] = lambda line: None) -> ModelCard:  # fmt: skip
    """Build the fused entry of ``raw`` (its recipe): cases → tracks → the rule chosen on validation → test once → ``fusion.json`` + card."""
    started = time.time()
    reduced = budget == "reduced"
    spec = FusionSpec.model_validate({k: raw[k] for k in ("words", "voice", "labels", "words_map", "voice_map", "typicality") if k in raw})
    cases_dir = Path(work) / "fusion" / raw["name"] / budget
    plan = raw["cases"]
    reduce = plan.get("reduced", {}) if reduced else {}
    valid_cases = [
        ravdess_case("ravdess-valid", data / "ravdess", reduce.get("valid_actors", plan["valid_actors"]), cases_dir / "ravdess-valid", spec.voice_map),
        espeak_case("espeak-meld-valid", data / "meld", "valid", reduce.get("meld_dialogues_valid", plan["meld_dialogues_valid"]), plan["seed"], cases_dir / "espeak-valid"),
    ]  # fmt: skip
    test_cases = [
        ravdess_case("ravdess-test", data / "ravdess", reduce.get("test_actors", plan["test_actors"]), cases_dir / "ravdess-test", spec.voice_map,
                     emotions=plan.get("test_emotions")),
        espeak_case("espeak-meld-test", data / "meld", "test", reduce.get("meld_dialogues_test", plan["meld_dialogues_test"]), plan["seed"], cases_dir / "espeak-test"),
    ]  # fmt: skip
    # the two models as built into ``out`` when they are there (a whole zoo built elsewhere), else the installed ones
    root = Path(out) if all((Path(out) / m / "model.json").is_file() for m in (spec.words, spec.voice)) else None
    voice_meta = json.loads(((root or ZOO_DIR) / spec.voice / "model.json").read_text())
    reference = None
    if spec.typicality is not None:
        reference, recorded = fit_typicality(spec.typicality, work, voice_meta["features"]["audio"]["settings"].get("fingerprint"))
        spec = spec.model_copy(update={"typicality": recorded})
    with FusedPredictor(raw["name"], spec, root=root, typicality=reference, device="cpu") as fused:
        key = "-".join(p.meta["weights_sha256"][:10] for p in (fused.words, fused.voice))
        typical = f"-t{spec.typicality['dims']}-{'-'.join(map(str, spec.typicality['calibration_actors']))}" if spec.typicality else ""
        rows_of = lambda case: track_rows(fused, case, log, cases_dir / f"rows4-{case.name}-{key}{typical}.json")  # noqa: E731
        valid = {case.name: rows_of(case) for case in valid_cases}
        spec = choose(valid, spec)
        log(f"{raw['name']}: alpha {spec.alpha}, gamma {spec.gamma}, floor {spec.typicality_floor}, T {spec.temperature} chosen on "
            f"validation: {json.dumps(spec.selection['valid'])}")  # fmt: skip
        test = {case.name: rows_of(case) for case in test_cases}  # scored once, after the choice
    table = {}
    for found in (test, valid):
        for name, rows in found.items():
            for which in (*TRACKS, "fused"):
                table[f"{name} {which}"] = scores(rows, which, spec.labels, spec)
            table[f"{name} lines"] = {"lines": float(len(rows.truth)), "one_segment": float(sum(rows.matched))}
    target = Path(out) / raw["name"]
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target / FUSION, spec.model_dump(mode="json"))
    if reference is not None:
        reference.save(target / TYPICALITY)
    rule = (f"logit = (α·s_words^γ·log p_words + (1−α)·s_voice^γ·log p_voice)/T, s a track's spread over the recording, the voice left out "
            f"where its typicality is below θ; α {spec.alpha}, γ {spec.gamma}, θ {spec.typicality_floor}, T {spec.temperature}")  # fmt: skip
    card = ModelCard(
        name=raw["name"], kind="fused", task=raw["card"]["task"], modalities=["text", "audio"], labels=spec.labels,
        architecture=raw["card"]["architecture"].format(words=spec.words, voice=spec.voice, rule=rule),
        training_data=[TrainingData.model_validate(d) for d in raw["card"]["training_data"]], licence=raw["card"]["licence"],
        scores=table, headline="accuracy", reported=["ravdess-test fused", "espeak-meld-test fused"],
        protocol="the fusion's α, γ, θ and T chosen on the validation cases only; the test cases scored once; each model's own protocol in its card",
        command=f"merkit zoo build --data-root {data} --only {raw['name']}" + (" --budget reduced" if reduced else ""),
        intended_use=raw["card"]["intended_use"], limits=raw["card"]["limits"],
        built=f"merkit {__version__}, {datetime.date.today().isoformat()}, budget {budget}, {time.time() - started:.0f} s",
    )  # fmt: skip
    write_card(target, card, recipe_path)
    return card
