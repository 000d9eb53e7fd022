"""Segmentation engine: model backends, embedding cache and the box -> mask session (no Qt)."""

from importlib import import_module

# imported on first use, so a command that fails on its arguments does not wait for torch
_HOME = {"KINDS": "backends", "Backend": "backends", "load_backend": "loading",
         "EmbeddingCache": "cache", "ModelInput": "intensity", "ModelInputError": "intensity",
         "InputTransform": "intensity", "normalise_for_model": "intensity",
         "Prediction": "session", "Session": "session"}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "KINDS",
    "Backend",
    "EmbeddingCache",
    "InputTransform",
    "ModelInput",
    "ModelInputError",
    "Prediction",
    "Session",
    "load_backend",
    "normalise_for_model",
]
