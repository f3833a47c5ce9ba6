"""Calibration and uncertainty measures: their home is :mod:`merkit.calibration`, below training (whose
ensembles fit temperatures) and evaluation; this module keeps the old import path."""

from merkit.calibration import (  # noqa: F401
    apply_temperature,
    brier_score,
    calibration_metrics,
    error_auroc,
    expected_calibration_error,
    fit_temperature,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    selective_prediction,
)
