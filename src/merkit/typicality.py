"""How usual a feature vector is for the data a model learnt from: a conformal p-value of its Mahalanobis distance.

The fused recording default (:mod:`merkit.fusion`) needs to know when the voice model hears speech unlike any it
learnt from — a synthetic voice draws confident, wrong answers from it, and nothing in its output shows that. Its
*input* does: the Whisper vectors of such speech lie far from the training actors'. :class:`Typicality` keeps a
Gaussian of the training vectors in a ``dims``-dimensional PCA space (Ledoit–Wolf shrunk covariance, scikit-learn,
at build time) and the distances of held-out *calibration* vectors; a new vector's typicality is the share of
calibration distances at least as large as its own (``(1 + count) / (n + 1)``: uniform on held-out data of the
same kind, near ``1 / (n + 1)`` for data unlike any of it). Reading needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from merkit.errors import MerkitError
from merkit.io import atomic_write_bytes

KEYS = ("mean", "components", "precision", "calibration")


@dataclass(frozen=True)
class Typicality:
    """A fitted reference: PCA mean and components, the precision matrix in PCA space, sorted calibration distances."""

    mean: np.ndarray  # [D]
    components: np.ndarray  # [K, D]
    precision: np.ndarray  # [K, K]
    calibration: np.ndarray  # [N], sorted

    @classmethod
    def fit(cls, reference: np.ndarray, calibration: np.ndarray, dims: int) -> "Typicality":
        """Fit on ``reference`` rows (``[N, D]``); calibrate on other rows of the same kind (held out from the fit)."""
        from sklearn.covariance import LedoitWolf
        from sklearn.decomposition import PCA

        if len(reference) <= dims or len(calibration) == 0:
            raise MerkitError(f"typicality needs more than {dims} reference rows and some calibration rows "
                              f"(got {len(reference)} and {len(calibration)})")  # fmt: skip
        pca = PCA(dims, random_state=0).fit(reference)
        shrunk = LedoitWolf().fit(pca.transform(reference))
        fitted = cls(pca.mean_.astype(np.float64), pca.components_.astype(np.float64), shrunk.precision_.astype(np.float64), np.zeros(0))
        return replace(fitted, calibration=np.sort(fitted.distance(calibration)))

    def distance(self, rows: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row (``[N, D]``) in the PCA space."""
        centred = (np.asarray(rows, dtype=np.float64) - self.mean) @ self.components.T
        return np.einsum("nk,kl,nl->n", centred, self.precision, centred)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Each row's typicality in (0, 1]: the conformal p-value of its distance among the calibration distances."""
        larger = len(self.calibration) - np.searchsorted(self.calibration, self.distance(rows), side="left")
        return (1 + larger) / (len(self.calibration) + 1)

    def save(self, path: Path) -> None:
        from safetensors.numpy import save

        atomic_write_bytes(path, save({k: np.ascontiguousarray(getattr(self, k), dtype=np.float64) for k in KEYS}))  # as scored

    @classmethod
    def load(cls, path: Path) -> "Typicality":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(path))
            return cls(**{k: arrays[k].astype(np.float64) for k in KEYS})
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise MerkitError(f"unreadable typicality reference ({exc})", path=path) from None
