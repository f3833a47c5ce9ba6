"""Evaluation: metrics with confidence intervals, robustness protocols, calibration, reports, comparisons."""
