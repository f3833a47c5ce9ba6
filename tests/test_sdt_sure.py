"""SDT and SURE (models.md §3–4): shapes, masking, losses, ablations, behaviour, published-pickle training."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_feature_pickles import write_feature_pickle

from merkit.batching import DialogueDataset
from merkit.checkpoint import load_checkpoint
from merkit.data import read_data
from merkit.models import get_model
from merkit.models.base import DataSpec
from merkit.models.sdt import IEMOCAP_CLASS_WEIGHTS, SDT, ModalityHeadsOutput, SDTConfig, self_distillation_losses
from merkit.models.sure import PRIOR_VARIANCE, SURE, SUREConfig
from merkit.models.transformer_blocks import GaussianExpert, UncertaintyAwareMoE
from merkit.training.config import resolve_configs
from merkit.training.engine import train_model

MODALITIES = ["text", "audio", "visual"]
SMALL = {"hidden": 16, "heads": 4}
FAST_TRAIN = ["hidden=32", "heads=4", "dropout=0.1", "lr=0.003", "batch_size=8", "patience=null"]


@pytest.fixture(scope="module")
def tiny():
    return read_data("synthetic", dialogues=12, max_turns=8, text_dim=6, audio_dim=5, visual_dim=4)


def _spec(bundle, modalities=MODALITIES) -> DataSpec:
    return DataSpec(
        modalities={m: bundle.features[m].dim for m in modalities},
        num_classes=bundle.corpus.labels.num_classes,
        class_names=bundle.corpus.labels.names,
    )


def _dataset(bundle, modalities=MODALITIES) -> DialogueDataset:
    return DialogueDataset(bundle.corpus, bundle.features, ["train", "valid", "test"], modalities)


def _batch(bundle, indices, modalities=MODALITIES):
    dataset = _dataset(bundle, modalities)
    return dataset.collate([dataset[i] for i in indices])


def _model(kind, bundle, modalities=MODALITIES, **settings):
    torch.manual_seed(0)
    model_class, config_class = (SDT, SDTConfig) if kind == "sdt" else (SURE, SUREConfig)
    return model_class(config_class(**{**SMALL, **settings}), _spec(bundle, modalities)).eval()


# --------------------------------------------------------------------------- shapes and masking

VARIANTS = [
    ("sdt", {}),
    ("sdt", {"unimodal_gate": "sigmoid_identity", "layers": 2, "input_norm": True}),
    ("sure", {}),
    ("sure", {"multimodal_fusion": True, "self_distill": True, "moe_residual": True, "layers": 2, "context_gru": True}),
    ("sure", {"moe": False, "reasoning": False}),
    ("sure", {"gate": False}),
]
VARIANT_IDS = [f"{kind}-{'-'.join(settings) or 'default'}" for kind, settings in VARIANTS]


@pytest.mark.parametrize(("kind", "settings"), VARIANTS, ids=VARIANT_IDS)
def test_outputs_have_per_modality_weights_and_uncertainty(tiny, kind, settings):
    model = _model(kind, tiny, **settings)
    batch = _batch(tiny, [0, 1, 2])
    output = model(batch)
    shape = tuple(batch.utterance_mask.shape)
    assert output.logits.shape == (*shape, 6)
    assert output.expert_names == tuple(MODALITIES) and output.expert_weights.shape == (*shape, 3)
    real = batch.utterance_mask
    assert torch.allclose(output.expert_weights[real].sum(-1), torch.ones(int(real.sum())), atol=1e-5)
    if kind == "sure" and settings.get("moe", True):
        assert output.uncertainty.shape == (*shape, 3) and (output.uncertainty[real] > 0).all()
    else:
        assert output.uncertainty is None


@pytest.mark.parametrize(("kind", "settings"), VARIANTS, ids=VARIANT_IDS)
def test_padding_and_missing_modalities_do_not_leak(tiny, kind, settings):
    model = _model(kind, tiny, **settings)
    lengths = _dataset(tiny).lengths
    short, long_ = int(np.argmin(lengths)), int(np.argmax(lengths))
    alone = model(_batch(tiny, [short])).logits[0]
    batch = _batch(tiny, [short, long_])
    n = alone.shape[0]
    assert batch.utterance_mask[0].sum() == n < batch.utterance_mask.shape[1]
    # Garbage in the padded positions (features and speakers) must not matter.
    for m in MODALITIES:
        batch.features[m][0, n:] = 50.0 * torch.randn_like(batch.features[m][0, n:])
    batch.speakers[0, n:] = 7
    padded = model(batch).logits
    assert torch.allclose(padded[0, :n], alone, atol=1e-5)
    # Audio missing for two utterances: its values there, whatever they are, change no output.
    batch.present["audio"][1, [0, 3]] = False
    batch.features["audio"][1, [0, 3]] = 0.0
    zeroed = model(batch)
    batch.features["audio"][1, [0, 3]] = 50.0 * torch.randn_like(batch.features["audio"][1, [0, 3]])
    garbage = model(batch)
    assert torch.allclose(zeroed.logits, garbage.logits, atol=1e-5)
    for name, value in zeroed.aux_losses.items():  # the MoE losses skip the missing tokens too
        assert torch.allclose(value, garbage.aux_losses[name]), name
    assert (garbage.expert_weights[1, [0, 3], 1] == 0).all()  # the missing modality has no weight
    if garbage.uncertainty is not None:
        assert (garbage.uncertainty[1, [0, 3], 1] == PRIOR_VARIANCE).all()
    # A dialogue with no audio at all still gives finite outputs.
    batch.present["audio"][0] = False
    assert torch.isfinite(model(batch).logits[batch.utterance_mask]).all()


@pytest.mark.parametrize("kind", ["sdt", "sure"])
def test_text_alone_sizes_every_layer_from_the_spec(tiny, kind):
    model = _model(kind, tiny, ["text"]).train()
    assert set(model.project) == {"text"} and model.project["text"].weight.shape == (16, 6)
    if kind == "sure":
        assert model.combine.in_features == 6  # Linear(M·C → C) with M = 1
    batch = _batch(tiny, [0, 1])  # the batch also carries audio and visual: they are ignored
    loss, _ = model.compute_loss(model(batch), batch)
    loss.backward()
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------- losses


def test_sdt_loss_terms_match_a_hand_computation(tiny):
    config = SDTConfig(**SMALL, temperature=2.0, modality_weight=0.5, distill_weight=3.0)
    batch = _batch(tiny, [0, 1], ["text", "audio"])
    batch.present["audio"][0, 0] = False
    gen = torch.Generator().manual_seed(0)
    shape = (*batch.utterance_mask.shape, 6)
    fused, text, audio = (torch.randn(shape, generator=gen) for _ in range(3))
    output = ModalityHeadsOutput(logits=fused, modality_logits={"text": text, "audio": audio})
    weights = torch.tensor(IEMOCAP_CLASS_WEIGHTS)
    parts = self_distillation_losses(output, batch, weights, config)

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    nll = kl = 0.0
    for name, logits in (("text", text), ("audio", audio)):
        mask = (batch.present[name] & batch.label_mask).numpy()
        y, w = batch.labels.numpy()[mask], weights.numpy()[batch.labels.numpy()[mask]]
        nll += (w * -log_softmax(logits.numpy()[mask])[np.arange(len(y)), y]).sum() / w.sum()
        keep = (batch.present[name] & batch.utterance_mask).numpy()
        teacher, student = log_softmax(fused.numpy()[keep] / 2.0), log_softmax(logits.numpy()[keep] / 2.0)
        kl += (np.exp(teacher) * (teacher - student)).sum() / keep.sum()
    assert parts["modality_nll"].item() == pytest.approx(0.5 * nll, rel=1e-5)
    assert parts["distill"].item() == pytest.approx(3.0 * kl, rel=1e-5)


def test_gaussian_expert_kl_and_sampling():
    torch.manual_seed(0)
    expert = GaussianExpert(8, logvar_clamp=10.0)
    x = torch.randn(3, 5, 8)
    found = expert(x)
    mean, logvar = expert.encode(x).chunk(2, dim=-1)
    normal = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    expected = torch.distributions.kl_divergence(normal, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(found.kl, expected, atol=1e-5) and torch.allclose(found.variance, logvar.exp().mean(-1))
    assert torch.allclose(found.sigma, (0.5 * logvar).exp().mean(-1)) and torch.allclose(found.mean_norm, mean.norm(dim=-1))
    expert.eval()
    assert torch.equal(expert(x).output, expert.decode(mean))  # evaluation uses μ, no sampling
    first, second = (expert(x, sample=True, generator=torch.Generator().manual_seed(3)).output for _ in range(2))
    assert torch.equal(first, second) and not torch.allclose(first, expert.decode(mean))


def test_router_avoids_an_uncertain_expert_and_renormalises_top_k():
    torch.manual_seed(0)
    moe = UncertaintyAwareMoE(8, num_experts=4, top_k=2, uncertainty_weight=1.0, logvar_clamp=10.0, residual=False).eval()
    with torch.no_grad():
        moe.experts[0].encode.bias[8:] = 6.0  # σ² ≈ e⁶ for expert 0
        moe.router.bias[:] = torch.tensor([5.0, 0.0, 0.0, 0.0])  # the plain router prefers expert 0
    x, mask = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mixed = moe(x, mask)
    outputs = torch.stack([expert(x).output for expert in moe.experts], dim=-1)
    variances = torch.stack([expert(x).variance for expert in moe.experts], dim=-1)
    probabilities = torch.softmax(moe.router(x) - variances, dim=-1)
    chosen = probabilities.topk(2, dim=-1).indices
    assert not (chosen == 0).any()  # the high-variance expert is never routed to
    weights = torch.zeros_like(probabilities).scatter(-1, chosen, probabilities.gather(-1, chosen))
    weights = weights / weights.sum(-1, keepdim=True)
    assert torch.allclose(mixed.output, (outputs * weights.unsqueeze(-2)).sum(-1), atol=1e-5)
    valid = mask.reshape(-1)
    indicator = torch.zeros_like(probabilities).scatter(-1, chosen, 1.0).reshape(-1, 4)[valid]
    balance = (probabilities.reshape(-1, 4)[valid].mean(0) * indicator.mean(0)).mean()
    assert mixed.balance_loss.item() == pytest.approx(balance.item(), rel=1e-5)
    assert torch.allclose(mixed.uncertainty, variances.gather(-1, chosen).mean(-1))
    plain = UncertaintyAwareMoE(8, 4, 2, 0.0, 10.0, False).eval()
    plain.load_state_dict(moe.state_dict())
    assert (plain.router(x).topk(2, dim=-1).indices == 0).any()  # the code's reading (λ_u = 0) would route to it


def test_sampled_evaluation_averages_seeded_draws(tiny):
    """``eval_latent=samples`` averages the probabilities of seeded draws: reproducible, different from μ,
    and equal to μ's when the experts' σ is negligible."""
    batch = _batch(tiny, [0, 1, 2])
    mean_output = _model("sure", tiny)(batch)
    sampled = _model("sure", tiny, eval_latent="samples", eval_samples=4)
    first, second = sampled(batch), sampled(batch)
    mask = batch.utterance_mask
    assert torch.equal(first.logits, second.logits)
    assert not torch.allclose(first.logits[mask].softmax(-1), mean_output.logits[mask].softmax(-1), atol=1e-3)
    assert torch.allclose(first.logits[mask].exp().sum(-1), torch.ones(int(mask.sum())), atol=1e-5)
    quiet = _model("sure", tiny, eval_latent="samples", eval_samples=2, logvar_init=-30.0, logvar_clamp=40.0)
    quiet_mean = _model("sure", tiny, logvar_init=-30.0, logvar_clamp=40.0)
    assert torch.allclose(quiet(batch).logits[mask].softmax(-1), quiet_mean(batch).logits[mask].softmax(-1), atol=1e-5)


def test_expert_sigma_and_mean_norm_are_logged_per_epoch(tmp_path):
    """The training log (logs/metrics.csv) has the experts' mean σ and ‖μ‖ per modality for every epoch,
    and the first epoch's σ reflects ``logvar_init`` (σ = e^{init/2} at the start)."""
    bundle = read_data("synthetic", dialogues=12, max_turns=6, text_dim=6, audio_dim=5, visual_dim=4)
    sigmas = {}
    for init in (0.0, -4.0):
        out = tmp_path / f"init{init}"
        train_model(bundle, "sure", out=out, overrides=[*FAST_TRAIN, "epochs=2", f"logvar_init={init}"], modalities=["text", "audio"],
                    seeds=[0], progress=False, accelerator="cpu")  # fmt: skip
        with (out / "seed0" / "logs" / "metrics.csv").open() as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("diag_sigma_text")]
        assert len(rows) == 2 and all(float(row["diag_mu_norm_audio"]) > 0 for row in rows)
        sigmas[init] = float(rows[0]["diag_sigma_text"])
    assert sigmas[0.0] == pytest.approx(1.0, abs=0.2) and sigmas[-4.0] == pytest.approx(np.exp(-2.0), abs=0.05), sigmas


# --------------------------------------------------------------------------- ablations and presets


def _parameter_prefixes(model) -> set[str]:
    return {name.split(".")[0] for name, _ in model.named_parameters()}


def test_ablation_flags_remove_their_modules_and_every_parameter_gets_a_gradient(tiny):
    entry = get_model("sure")
    full = _model("sure", tiny)
    assert {"moe", "reasoning", "block", "embedding", "combine"} <= _parameter_prefixes(full)
    for flag, removed in (("moe", {"moe"}), ("reasoning", {"reasoning"}), ("gate", {"block", "embedding"})):
        config, _ = resolve_configs(entry, "iemocap", [f"{flag}=false", "hidden=16"])
        assert getattr(config, flag) is False and config.hidden == 16
        ablated = SURE(config, _spec(tiny))
        assert _parameter_prefixes(ablated) == _parameter_prefixes(full) - removed
    batch = _batch(tiny, [0, 1])
    for kind, settings in VARIANTS:  # DDP (find_unused_parameters off) needs a gradient for every parameter
        model = _model(kind, tiny, **settings).train()
        model.compute_loss(model(batch), batch)[0].backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == [], (kind, settings)


def test_presets_carry_the_papers_settings():
    for name in ("sdt", "sure"):
        model, train = resolve_configs(get_model(name), "iemocap", [])
        assert (model.hidden, model.heads, model.dropout, model.temperature) == (1024, 8, 0.5, 1.0)
        assert (train.lr, train.batch_size, train.epochs, train.optimizer, train.weight_decay) == (1e-4, 16, 150, "adam", 1e-5)
        assert train.class_weights == pytest.approx([1 / 0.086747, 1 / 0.144406, 1 / 0.227883, 1 / 0.160585, 1 / 0.127711, 1 / 0.252668], rel=1e-5)
        assert train.grad_clip is None and train.patience is None
        model, train = resolve_configs(get_model(name), "meld", [])
        assert (model.temperature, model.unimodal_gate, train.lr, train.batch_size, train.epochs) == (8.0, "sigmoid_identity", 5e-6, 8, 50)
        assert train.class_weights == "none"
        for own in ("iemocap-mpnet", "meld-mpnet"):
            model, train = resolve_configs(get_model(name), own, [])
            assert train.patience is not None and model.hidden < 1024
    sure, _ = resolve_configs(get_model("sure"), "iemocap", [])
    assert (sure.experts, sure.top_k, sure.reasoning_steps, sure.multimodal_fusion, sure.self_distill) == (4, 3, 2, False, False)


# --------------------------------------------------------------------------- behaviour on the synthetic corpus


def _test_f1(results) -> float:
    return results["summary"]["test"]["weighted_f1"]["mean"]


def test_sure_combines_complementary_modalities(tmp_path):
    """Text sees only c // 2 and audio only c % 2: together they beat either alone, clearly."""
    bundle = read_data("synthetic", complementary=True, dialogues=48, max_turns=10, text_dim=12, audio_dim=12, visual_dim=4)
    scores = {
        "+".join(modalities): _test_f1(
            train_model(bundle, "sure", out=tmp_path / "+".join(modalities), overrides=[*FAST_TRAIN, "epochs=12"],
                        modalities=modalities, seeds=[0], progress=False, accelerator="cpu")  # fmt: skip
        )
        for modalities in (["text"], ["audio"], ["text", "audio"])
    }
    assert scores["text+audio"] > max(scores["text"], scores["audio"]) + 0.15, scores



def test_a_pure_noise_modality_loses_weight_and_certainty(tmp_path):
    """Audio carries no label information: its share of SURE's decision drops well below text's and
    visual's, and its experts stay the most uncertain (closest to the N(0, I) prior)."""
    bundle = read_data("synthetic", noise_modalities="audio", dialogues=100, max_turns=10, text_dim=16, audio_dim=16,
                       visual_dim=16, visual_signal=0.8)  # fmt: skip
    train_model(bundle, "sure", out=tmp_path / "run", overrides=[*FAST_TRAIN, "epochs=12"], seeds=[0], progress=False, accelerator="cpu")
    rows = [json.loads(line) for line in (tmp_path / "run" / "seed0" / "predictions-test.jsonl").read_text().splitlines()]
    weight = {m: np.mean([row["expert_weights"][m] for row in rows]) for m in MODALITIES}
    uncertainty = dict(zip(MODALITIES, np.mean([row["uncertainty"] for row in rows], axis=0)))
    assert weight["audio"] < 0.5 * min(weight["text"], weight["visual"]), weight
    assert uncertainty["audio"] > max(uncertainty["text"], uncertainty["visual"]), uncertainty

# --------------------------------------------------------------------------- published pickles, CLI, DDP

PAPER_DIMS = {"text": 1024, "audio": 1582, "visual": 342}


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as conftest.one_torch_thread
    return subprocess.run([sys.executable, "-m", "merkit", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("model", ["sdt", "sure"])
def test_published_sdt_pickle_trains_end_to_end_under_ddp(tmp_path, model):
    """The SDT/SURE IEMOCAP pickle layout with the paper's widths (text 1024, audio 1582, visual 342),
    trained through ``merkit train`` with the paper preset, on two DDP processes (the engine's DDP path)."""
    pickle_path = tmp_path / "iemocap_multimodal_features.pkl"
    written = write_feature_pickle(pickle_path, "sdt-iemocap")
    assert {m: next(iter(arrays.values())).shape[1] for m, arrays in written.features.items()} == PAPER_DIMS
    run = _cli("train", str(pickle_path), "--model", model, "--preset", "iemocap", "--set", "hidden=32", "--set", "heads=4",
               "--set", "epochs=2", "--devices", "2", "--strategy", "ddp", "--quiet", "--device", "cpu",
               "--out", str(tmp_path / "run"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "run" / "seed0" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and np.isfinite(metrics["test"]["weighted_f1"])
    checkpoint = load_checkpoint(tmp_path / "run" / "seed0" / "best")
    assert checkpoint.meta["data_spec"]["modalities"] == PAPER_DIMS
    assert checkpoint.meta["train_config"]["class_weights"] == pytest.approx(IEMOCAP_CLASS_WEIGHTS)
    rows = [json.loads(line) for line in (tmp_path / "run" / "seed0" / "predictions-test.jsonl").read_text().splitlines()]
    assert len(rows) == sum(len(written.labels[key]) for key in written.test)
    assert set(rows[0]["expert_weights"]) == set(PAPER_DIMS)
    assert (len(rows[0]["uncertainty"]) == 3) if model == "sure" else ("uncertainty" not in rows[0])
