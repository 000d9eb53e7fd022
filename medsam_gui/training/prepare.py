"""Model inputs for training: each sample's slice as the model sees it, and its embedding.

Volumes are re-opened from the path saved in the workspace and checked against the saved
content hash. Embeddings come from the base backend through ``Session`` and the shared
``EmbeddingCache``, under the model input each slice was made with, so slices the annotator
already encoded cost nothing, and new ones land in the cache the annotator uses next (the
decoder-only result keeps the same encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from medsam_gui.errors import MedsamError
from medsam_gui.training.dataset import Sample, group_by_volume

SliceKey = Tuple[str, str, int, str]  # Sample.slice_key
Progress = Optional[Callable[[int, int, int, dict], None]]
Cancel = Optional[Callable[[], bool]]


@dataclass
class PreparedSlice:
    image: np.ndarray  # uint8 H×W, the normalised slice the model sees
    embedding: Optional[torch.Tensor]  # (1, C, h, w) fp16 on CPU, from the base encoder

    @property
    def shape(self) -> Tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def open_volume(sample: Sample):
    """The volume a sample came from, refusing one whose voxels changed since annotation."""
    from medsam_gui.io import load_volume

    if not sample.source_path:
        raise MedsamError("the workspace does not say which scan it annotates", sample.entry_dir)
    volume = load_volume(sample.source_path, series_uid=sample.series_uid)
    if (volume.content_hash != sample.volume_id  # else: saved before hash scheme 2?
            and volume.legacy_content_hash != sample.volume_id):
        raise MedsamError(
            "the scan differs from the one that was annotated (content hash changed); "
            f"annotations are in {sample.entry_dir}", sample.source_path)
    return volume


def prepare_slices(samples: Sequence[Sample], backend, embed: Sequence[Sample], cache=None,
                   progress: Progress = None, cancel: Cancel = None
                   ) -> Optional[Dict[SliceKey, PreparedSlice]]:
    """Model slices of all ``samples``; base embeddings of the slices of ``embed`` too.

    Returns None when ``cancel`` fires (checked before every encoder call).
    """
    from medsam_gui.engine import EmbeddingCache, ModelInput, Session

    cache = cache if cache is not None else EmbeddingCache()
    need_emb = {s.slice_key for s in embed}
    keys = {s.slice_key for s in samples} | need_emb
    total, done = len(need_emb), 0
    out: Dict[SliceKey, PreparedSlice] = {}
    for vid, group in group_by_volume(list(samples) + list(embed)).items():
        volume = open_volume(group[0])
        inputs = {s.input_key: s.model_input for s in group}
        for input_key, choice in sorted(inputs.items()):  # one Session per model input
            session = Session(volume, backend, cache, ModelInput.from_json(choice))
            for axis, index in sorted({(s.axis, s.index) for s in group
                                       if s.input_key == input_key}):
                key = (vid, axis, index, input_key)
                if key in out or key not in keys:
                    continue
                if cancel is not None and cancel():
                    return None
                emb = None
                if key in need_emb:
                    emb = session.embed(axis, index).detach().to("cpu", torch.float16)
                    done += 1
                    if progress is not None:
                        progress(0, done, total, {"phase": "embed"})
                out[key] = PreparedSlice(session.model_slice(axis, index), emb)
    return out
