"""MiSTER-E: its losses on hand cases, masking of padding and missing speech, presets and ablations,
and its behaviour on synthetic dialogues (the gate trusts the informative expert)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from merkit.batching import DialogueDataset
from merkit.data import read_data
from merkit.errors import MerkitError
from merkit.models import available_models, layers
from merkit.models.base import DataSpec
from merkit.training.config import resolve_configs
from merkit.training.engine import train_model

DIMS = {"text": 12, "audio": 10}
SMALL = {"conv_channels": 16, "gru_hidden": 8, "gru_layers": 2, "cross_dim": 16, "attention_dim": 12, "coattention_blocks": 2}


@pytest.fixture(scope="module")
def tiny():
    return read_data("synthetic", dialogues=16, min_turns=3, max_turns=9, text_dim=DIMS["text"], audio_dim=DIMS["audio"])


def _dataset(bundle, modalities=("text", "audio")):
    return DialogueDataset(bundle.corpus, bundle.features, ["train"], list(modalities))


def _model(modalities=("text", "audio"), **settings):
    entry = available_models()["mister-e"]
    torch.manual_seed(0)
    spec = DataSpec(modalities={m: DIMS[m] for m in modalities}, num_classes=6)
    return entry.model_class(entry.config_class(**{**SMALL, **settings}), spec).eval()


# --- losses -------------------------------------------------------------------------------


def test_focal_loss_with_gamma_zero_is_cross_entropy_and_down_weights_easy_utterances():
    logits = torch.randn(2, 5, 4)
    labels = torch.tensor([[0, 1, 2, 3, 0], [1, 2, -100, -100, -100]])
    mask = labels >= 0
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    assert layers.masked_focal_loss(logits, labels, mask, 0.0) == pytest.approx(layers.masked_cross_entropy(logits, labels, mask).item(), rel=1e-6)
    assert layers.masked_focal_loss(logits, labels, mask, 0.0, weights) == pytest.approx(
        layers.masked_cross_entropy(logits, labels, mask, weights).item(), rel=1e-6
    )
    even = torch.zeros(1, 1, 2)  # p_y = 1/2: (1 - 1/2)^2 · ln 2
    assert layers.masked_focal_loss(even, torch.tensor([[0]]), torch.tensor([[True]]), 2.0) == pytest.approx(0.25 * math.log(2))
    # MiSTER-E's code divides by every position, padding included.
    total = layers.masked_focal_loss(logits, labels, mask, 3.0) * mask.sum()
    assert layers.masked_focal_loss(logits, labels, mask, 3.0, normalizer=10.0) == pytest.approx(total.item() / 10, rel=1e-6)


def test_supervised_contrastive_loss_on_a_hand_case_with_label_or_pair_positives_and_padding():
    # Two utterances, speech and text views each (1,0) and (0,1); cosine 1 within a pair, 0 across.
    first = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, -3.0]]])
    second = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-2.0, 7.0]]])
    mask = torch.tensor([[True, True, False]])  # the third position is padding with junk features
    log_denominator = math.log(2 + math.e)  # others of anchor (1,0): exp(0) + exp(1) + exp(0)
    same, different = torch.tensor([[0, 0, 0]]), torch.tensor([[0, 1, 1]])
    loss = layers.supervised_contrastive_loss
    # Same label: positives are the other three anchors, mean similarity 1/3; else only the paired view.
    assert loss(first, second, same, mask) == pytest.approx(log_denominator - 1 / 3, rel=1e-6)
    assert loss(first, second, different, mask) == pytest.approx(log_denominator - 1, rel=1e-6)
    assert loss(first, second, same, mask, positives="pair") == pytest.approx(log_denominator - 1, rel=1e-6)
    assert loss(first, second, same, mask, temperature=0.5) == pytest.approx(
        math.log(2 + math.e**2) - 2 / 3, rel=1e-6
    )
    assert loss(first, second, same, torch.zeros_like(mask)) == 0.0


def test_symmetric_kl_on_a_hand_case_excludes_padding():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    expected = float(((p - q) * (p.log() - q.log())).sum())  # KL(p‖q) + KL(q‖p)
    assert expected == pytest.approx(0.4 * math.log(0.9 / 0.5) + 0.4 * math.log(0.5 / 0.1))
    first = torch.stack([p.log(), torch.tensor([3.0, -3.0])]).unsqueeze(0)  # [1, 2, 2]; position 2 is padding
    second = torch.stack([q.log(), torch.tensor([-3.0, 3.0])]).unsqueeze(0)
    mask = torch.tensor([[True, False]])
    assert layers.symmetric_kl(first, second, mask) == pytest.approx(expected, rel=1e-6)
    torch_kl = F.kl_div(q.log(), p, reduction="sum") + F.kl_div(p.log(), q, reduction="sum")
    assert layers.symmetric_kl(first, second, mask, normalizer=4) == pytest.approx(float(torch_kl) / 4, rel=1e-5)


# --- masking ------------------------------------------------------------------------------


def test_text_alone_degenerates_to_the_text_expert(tiny):
    model = _model(("text",))
    dataset = _dataset(tiny, ("text",))
    batch = dataset.collate([dataset[i] for i in range(4)])
    output = model(batch)
    real = batch.utterance_mask
    assert output.expert_names == ("speech", "text", "cross-modal")
    assert torch.equal(output.expert_weights[real], torch.tensor([[0.0, 1.0, 0.0]]).expand(int(real.sum()), 3))
    assert torch.equal(output.logits[real], output.expert_logits[:, :, 1][real])
    assert model.gate is None and model.cross is None and set(model.experts) == {"text"}
    _, parts = model.compute_loss(output, batch)
    assert set(parts) == {"main"}


def test_missing_speech_leaves_the_text_expert_and_its_junk_features_never_leak(tiny):
    model = _model()
    dataset = _dataset(tiny)
    batch = dataset.collate([dataset[i] for i in range(4)])
    present = {m: p.clone() for m, p in batch.present.items()}
    present["audio"][0, 1] = False
    present["audio"][2] = False  # a whole dialogue without speech
    outputs = []
    for junk in (0.0, 1e3):
        features = {m: f.clone() for m, f in batch.features.items()}
        features["audio"][~present["audio"]] = junk
        outputs.append(model(batch.with_features(features, present)))
    first, second = outputs
    assert torch.isfinite(first.logits).all()
    assert torch.allclose(first.logits, second.logits, atol=1e-5)
    assert torch.allclose(first.expert_weights, second.expert_weights, atol=1e-6)
    for b, t in [(0, 1), (2, 0), (2, 1)]:
        assert first.expert_weights[b, t].tolist() == [0.0, 1.0, 0.0]
        assert torch.allclose(first.logits[b, t], first.expert_logits[b, t, 1])
    both = batch.utterance_mask & present["audio"]
    assert (first.expert_weights[both][:, [0, 2]].sum(-1) > 0).all()  # where speech exists the gate may use it
    _, parts = model.compute_loss(first, batch)
    assert all(torch.isfinite(v) for v in parts.values())


@pytest.mark.parametrize("use_padding_mask", [True, False])
def test_padding_changes_no_output_only_with_the_padding_mask(tiny, use_padding_mask):
    model = _model(use_padding_mask=use_padding_mask)
    dataset = _dataset(tiny)
    short = min(range(len(dataset)), key=lambda i: dataset.lengths[i])
    long = max(range(len(dataset)), key=lambda i: dataset.lengths[i])
    alone = model(dataset.collate([dataset[short]]))
    padded = model(dataset.collate([dataset[short], dataset[long]]))
    n = dataset.lengths[short]
    assert n < dataset.lengths[long]
    same = torch.allclose(alone.logits[0], padded.logits[0, :n], atol=1e-5)
    assert same == use_padding_mask  # the official code (no mask) lets the padding in


# --- presets and ablations ---------------------------------------------------------------


def test_paper_presets_and_the_embedding_source_check():
    entry = available_models()["mister-e"]
    assert {"iemocap", "meld", "mosi", "iemocap-mpnet", "meld-mpnet"} <= set(entry.presets)
    model_config, train_config = resolve_configs(entry, "iemocap", [])
    assert (model_config.gru_hidden, model_config.conv_channels, model_config.cross_dim, model_config.gru_layers) == (512, 1024, 1024, 3)
    assert (model_config.gate_temperature, model_config.supcon_weight, model_config.kl_weight, model_config.focal_gamma) == (2.0, 2.0, 0.1, 3.0)
    assert (train_config.optimizer, train_config.lr, train_config.batch_size, train_config.epochs, train_config.grad_clip) == ("adam", 1e-5, 8, 100, 1.0)
    spec = DataSpec(modalities={"text": 768, "audio": 384}, num_classes=6)
    with pytest.raises(MerkitError, match="llm-lora text embeddings \\(2048-d\\).*768-d"):
        entry.model_class(model_config, spec)
    own, _ = resolve_configs(entry, "iemocap-mpnet", [*(f"{k}={v}" for k, v in SMALL.items())])
    assert own.text_embedding == "mpnet"
    entry.model_class(own, spec)  # MPNet text, any audio width


def test_each_ablation_is_one_setting(tiny):
    entry = available_models()["mister-e"]
    dataset = _dataset(tiny)
    batch = dataset.collate([dataset[i] for i in range(4)])
    full = _model()
    _, parts = full.compute_loss(full(batch), batch)
    assert set(parts) == {"main", "speech", "text", "cross-modal", "kl", "supcon"}
    for setting, absent in [("contrastive=false", "supcon"), ("kl=false", "kl"), ("cross_modal_expert=false", "cross-modal")]:
        config, _ = resolve_configs(entry, None, [setting, *(f"{k}={v}" for k, v in SMALL.items())])
        model = _model(**config.model_dump())
        output = model(batch)
        _, ablated = model.compute_loss(output, batch)
        assert set(ablated) == set(parts) - {absent}, setting
    assert model.cross is None and output.expert_weights[..., 2].abs().sum() == 0  # the last one: no cross-modal expert


# --- behaviour on synthetic dialogues -----------------------------------------------------

FAST = ["conv_channels=32", "gru_hidden=16", "gru_layers=1", "cross_dim=32", "attention_dim=24", "coattention_blocks=1",
        "lr=0.003", "weight_decay=0", "batch_size=8", "epochs=10", "patience=null"]  # fmt: skip


def _train(bundle, path, modalities):
    results = train_model(bundle, "mister-e", out=path, overrides=FAST, modalities=modalities, seeds=[0], progress=False)
    rows = [json.loads(line) for line in (path / "seed0" / "predictions-test.jsonl").read_text().splitlines()]
    weights = {name: float(np.mean([row["expert_weights"][name] for row in rows])) for name in rows[0]["expert_weights"]}
    return results["summary"]["test"]["weighted_f1"]["mean"], weights


@pytest.fixture(scope="module")
def complementary(tmp_path_factory):
    """Text sees only the pair c // 2 of the label, speech only its parity c % 2."""
    bundle = read_data("synthetic", dialogues=60, complementary=True, audio_signal=1.0)
    root = tmp_path_factory.mktemp("complementary")
    return {"+".join(m): _train(bundle, root / "+".join(m), m) for m in (["text", "audio"], ["text"], ["audio"])}


def test_with_complementary_modalities_the_mixture_beats_each_single_expert(complementary):
    full, _ = complementary["text+audio"]
    text, _ = complementary["text"]
    speech, _ = complementary["audio"]
    assert full > max(text, speech) + 0.1, complementary


def test_when_speech_is_noise_the_gate_moves_to_the_text_expert(complementary, tmp_path):
    bundle = read_data("synthetic", dialogues=60, noise_modalities="audio")
    _, weights = _train(bundle, tmp_path / "noise", ["text", "audio"])
    _, informative = complementary["text+audio"]
    assert weights["text"] > weights["speech"] + 0.3, weights
    assert weights["speech"] < informative["speech"] - 0.05, (weights, informative)


def test_fusion_layer_norm_eps_is_the_official_codes():
    from merkit.models.base import DataSpec
    from merkit.models.mister_e import MisterE, MisterEConfig

    model = MisterE(MisterEConfig(), DataSpec(modalities={"text": 8, "audio": 6}, num_classes=3))
    assert model.cross.norm.eps == 1e-6
