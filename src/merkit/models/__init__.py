"""Model registry and the models (one file per model)."""

from merkit.models.registry import ModelEntry, available_models, get_model, register_model

__all__ = ["ModelEntry", "available_models", "get_model", "register_model"]
