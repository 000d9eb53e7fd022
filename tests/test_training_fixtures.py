"""Shared, built-once training data for the training tests (no tests in this module).

BRATS ground truth (whole tumour, OTMultiClass > 0) stands in for a clinician's corrected
masks: pat0001 slices for training, pat0002 slices as the held-out validation volume. The
workspaces, the base backend and an embedding disk cache are built once per test process and
shared by test_training.py and test_training_dialog.py (encoder calls dominate the CPU time).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from conftest import PAT1, PAT2

N_TRAIN_SLICES = 12
N_VAL_SLICES = 6
FLAIR = "Flair_subtrMeanDivStd.nii.gz"
GT = "OTMultiClass.nii.gz"


@functools.lru_cache(maxsize=None)
def root() -> Path:
    d = Path(tempfile.mkdtemp(prefix="medsam-train-test-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@functools.lru_cache(maxsize=None)
def brats_workspaces() -> "tuple[str, str]":
    """(training workspace with pat0001, validation workspace with pat0002)."""
    from medsam_gui.training.seed_workspace import workspace_from_labels

    w1, w2 = root() / "ws_pat0001", root() / "ws_pat0002"
    workspace_from_labels(str(PAT1 / FLAIR), str(PAT1 / GT), str(w1), n_slices=N_TRAIN_SLICES)
    workspace_from_labels(str(PAT2 / FLAIR), str(PAT2 / GT), str(w2), n_slices=N_VAL_SLICES)
    return str(w1), str(w2)


@functools.lru_cache(maxsize=None)
def base_backend():
    from medsam_gui.engine import load_backend

    return load_backend("litemedsam", device="cpu")


def cache_dir() -> str:
    return str(root() / "embeddings")


@functools.lru_cache(maxsize=None)
def shared_cache():
    from medsam_gui.engine import EmbeddingCache

    return EmbeddingCache(disk_dir=cache_dir())


def model_params(backend) -> dict:
    return {k: v.detach().clone() for k, v in backend.model.state_dict().items()}
