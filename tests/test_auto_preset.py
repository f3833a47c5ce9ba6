"""``--preset auto``: settings from the training split's shape, said with their reasons, stored with the run."""

import json

import pytest

from merkit.data import read_data
from merkit.data.corpus import build_corpus
from merkit.errors import MerkitError
from merkit.models import available_models
from merkit.models.registry import PRESET_SHAPES, register_model
from merkit.training import auto
from merkit.training.auto import CorpusShape, auto_preset
from merkit.training.config import resolve_configs
from merkit.training.engine import train_model
from conftest import run_cli


def _corpus(dialogues: int, turns: int, labels: list[int], speakers: int = 1):
    """``dialogues`` training dialogues of ``turns`` turns; labels cycle through ``labels``."""
    items = iter(labels * (dialogues * turns))
    return build_corpus(
        name="shape",
        labels={"names": ("a", "b", "c")},
        dialogues=[
            {"id": f"d{d}", "utterances": [{"id": f"d{d}u{t}", "speaker": f"s{t % speakers}", "label": next(items)} for t in range(turns)]}
            for d in range(dialogues)
        ],
        splits={"train": tuple(f"d{d}" for d in range(dialogues))},
    )


def test_corpus_shape_counts_the_training_split():
    shape = CorpusShape.of(_corpus(10, 4, [0, 0, 0, 0, 0, 0, 1, 1, 2, 2], speakers=3), ["train"])
    assert (shape.dialogues, shape.utterances, shape.mean_turns, shape.max_speakers, shape.classes) == (10, 40, 4.0, 3, 3)
    assert shape.imbalance == pytest.approx(24 / 8) and not shape.multi_label
    assert "40 training utterances in 10 dialogues of 4.0 turns" in shape.describe()


def test_small_corpora_get_more_epochs_and_patience_than_large_ones():
    entry = available_models()["mlp"]
    small = auto_preset(entry, CorpusShape.of(_corpus(100, 1, [0, 1, 2]), ["train"]), "weighted_f1")
    large = auto_preset(entry, CorpusShape.of(_corpus(5000, 1, [0, 1, 2]), ["train"]), "weighted_f1")
    assert small.train["batch_size"] == 100 // auto.MIN_STEPS_PER_EPOCH and large.train["batch_size"] == auto.MAX_BATCH
    assert small.train["epochs"] > large.train["epochs"] >= auto.EPOCH_RANGE[0]
    assert small.train["patience"] >= large.train["patience"] >= auto.PATIENCE_RANGE[0]
    steps = -(-100 // small.train["batch_size"])
    assert small.train["epochs"] == min(-(-auto.TARGET_STEPS // steps), auto.EPOCH_RANGE[1])


@pytest.mark.parametrize(
    ("monitor", "labels", "expected"),
    [
        ("macro_f1", [0, 0, 0, 0, 1, 2], "inverse_frequency"),
        ("uar", [0, 0, 0, 0, 1, 2], "inverse_frequency"),
        ("weighted_f1", [0, 0, 0, 0, 1, 2], "none"),
        ("macro_f1", [0, 1, 2], "none"),
    ],
)
def test_class_weights_follow_the_selection_metric_and_the_balance(monitor, labels, expected):
    chosen = auto_preset(available_models()["mlp"], CorpusShape.of(_corpus(60, 1, labels), ["train"]), monitor)
    assert chosen.train["class_weights"] == expected
    assert any(r.startswith(f"class_weights={expected} (") for r in chosen.describe()["reasons"])


def test_dialogue_models_get_the_speaker_count_of_the_data():
    shape = CorpusShape.of(_corpus(40, 6, [0, 1, 2], speakers=4), ["train"])
    for name in ("sdt", "sure"):
        chosen = auto_preset(available_models()[name], shape, "weighted_f1")
        assert chosen.model["max_speakers"] == 4
        model_config, _ = resolve_configs(available_models()[name], "auto", [], chosen.describe())
        assert model_config.max_speakers == 4


def test_lddu_on_a_small_multi_label_corpus_gets_the_code_rate_and_no_extractor_layers():
    """Issue #34: at the default lr 1e-3 LDDU stalled at the label priors on 5k GoEmotions items (README
    "LDDU on small multi-label corpora"); a large corpus keeps the extractor's layers."""
    from dataclasses import replace

    from merkit.models import lddu

    entry = available_models()["lddu"]
    small = CorpusShape(dialogues=5000, utterances=5000, mean_turns=1.0, max_speakers=1, classes=11, multi_label=True, imbalance=30.0)
    chosen = auto_preset(entry, small, "micro_f1")
    assert chosen.train["lr"] == lddu.AUTO_LR == 2e-4 and chosen.model["encoder_layers"] == 0
    assert (chosen.train["batch_size"], chosen.train["epochs"], chosen.train["patience"]) == (16, 20, 5)
    model_config, train_config = resolve_configs(entry, "auto", [], chosen.describe())
    assert model_config.encoder_layers == 0 and train_config.lr == 2e-4
    large = auto_preset(entry, replace(small, dialogues=40_000, utterances=40_000), "micro_f1")
    assert large.train["lr"] == 2e-4 and "encoder_layers" not in large.model


def test_lddu_auto_weights_rare_labels_positives_on_small_multi_label_corpora_and_says_why():
    """Issue #34's last point: on small multi-label corpora LDDU's auto weights each label's positives by its
    negatives/positives (chosen on validation); the reason is in the preset's message; larger or single-label
    corpora keep the code's unweighted BCE (or the shared rule); ``--set`` still wins."""
    from dataclasses import replace

    from merkit.models import lddu

    entry = available_models()["lddu"]
    small = CorpusShape(dialogues=5000, utterances=5000, mean_turns=1.0, max_speakers=1, classes=7, multi_label=True, imbalance=25.7)
    chosen = auto_preset(entry, small, "micro_f1")
    assert (chosen.train["class_weights"], chosen.train["class_weight_power"]) == ("inverse_frequency", lddu.AUTO_POS_WEIGHT_POWER)
    assert f"class_weights=inverse_frequency, class_weight_power={lddu.AUTO_POS_WEIGHT_POWER} ({lddu.AUTO_WEIGHTING_REASON})" in chosen.summary()
    _, train_config = resolve_configs(entry, "auto", [], chosen.describe())
    assert (train_config.class_weights, train_config.class_weight_power) == ("inverse_frequency", 1.0)
    _, overridden = resolve_configs(entry, "auto", ["class_weights=none"], chosen.describe())
    assert overridden.class_weights == "none"
    large = auto_preset(entry, replace(small, dialogues=40_000, utterances=40_000), "micro_f1")
    assert "class_weights" not in large.train and "class_weight_power" not in large.train
    single = auto_preset(entry, replace(small, multi_label=False), "macro_f1")  # single-label: the shared rule decides
    assert single.why["class_weights"] != lddu.AUTO_WEIGHTING_REASON and "class_weight_power" not in single.train


def test_training_with_auto_says_what_it_chose_and_stores_it(tmp_path):
    heard = []
    results = train_model(
        read_data("synthetic", dialogues=24, max_turns=6, text_dim=8, audio_dim=6, visual_dim=4),
        "mlp", out=tmp_path / "run", preset="auto", overrides=["epochs=2"], progress=False, announce=heard.append,
    )  # fmt: skip
    assert len(heard) == 1 and heard[0].startswith("preset auto for ") and "--set wins for epochs" in heard[0]
    assert "epochs=" not in heard[0].partition(":")[2].partition("--set")[0]  # the overridden choice is not claimed
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["preset"] == "auto" and results["auto_preset"] == stored["auto_preset"]
    assert stored["train_config"]["epochs"] == 2 and stored["train_config"]["patience"] == stored["auto_preset"]["train"]["patience"]


def test_auto_is_offered_beside_the_named_presets_and_is_kept_for_them():
    with pytest.raises(MerkitError, match="presets: .*auto"):
        resolve_configs(available_models()["sdt"], "nope", [])
    with pytest.raises(ValueError, match="'auto' is the corpus-adaptive preset"):
        register_model("x-auto", config=object, modalities=("text",), description="", presets={"auto": {}})(type("X", (), {}))
    with pytest.raises(ValueError, match="PRESET_SHAPES"):
        register_model("x-undescribed", config=object, modalities=("text",), description="", presets={"mine": {}})(type("Y", (), {}))
    for entry in available_models().values():
        assert set(entry.presets) <= set(PRESET_SHAPES)


def test_models_command_says_which_corpus_shape_each_preset_suits(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line a row
    result = run_cli("models", timeout=120)
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert "suits" in flat and "2-speaker dialogues of ~50 turns" in flat and "--preset auto" in flat
    # every GoEmotions figure uses the Ekman grouping (7 labels), not the 28 fine-grained ones
    assert "~43k training items, 7 labels" in flat and "28 labels" not in flat


def test_the_model_catalogue_is_the_live_registry_and_listing_it_imports_no_torch():
    import subprocess
    import sys

    from merkit.models.registry import catalogue, describe_models

    assert catalogue() == describe_models(), (
        "src/merkit/models/catalogue.json is stale: run "
        "python -c 'from merkit.models.registry import write_catalogue; write_catalogue()'"
    )
    script = "import sys; from merkit.cli import main; sys.argv = ['merkit', 'models']\ntry:\n    main()\nfinally:\n    assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120).returncode == 0
