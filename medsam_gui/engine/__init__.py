"""Segmentation engine: model backends, embedding cache and the box -> mask session (no Qt)."""

from medsam_gui.engine.backends import KINDS, Backend, load_backend
from medsam_gui.engine.cache import EmbeddingCache
from medsam_gui.engine.intensity import (ModelInput, ModelInputError, InputTransform,
                                         normalise_for_model)
from medsam_gui.engine.session import Prediction, Session

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
