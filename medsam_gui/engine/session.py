"""Session: one volume + one backend + the embedding cache; box -> mask on cached slices.

Threading: the image encoder runs under ``_encode_lock`` (one slice at a time, in whatever
thread calls ``embed``/``precompute``); ``predict`` on a cached slice takes no lock at all and
runs the prompt encoder + mask decoder in the caller's thread, concurrently with a running
precompute, so a box never waits behind the queue of slices.

A box on a filled slice: ``predict(axis, index, box, previous_mask=fill)`` with the slice's
unreviewed fill (propagated, interpolated) corrects that fill instead of starting again
(``engine.correction``: the fill inside the box with the box's mask added; the box's mask
alone was worse than the fill about one time in three on the review queue's slices). Clicks
that follow on that box refine the corrected mask. No ``previous_mask``: the box path exactly.

Clicks: ``predict(axis, index, box, points)`` takes a box and all clicks so far on that slice,
in order. With no click it is the official box path, exactly. With clicks, each click refines
the previous result (``engine.refine``, method ``click_method``; the measurements behind the
default are in ``benchmarks/bench_clicks.py``); the state after the last call on a slice is
kept, so one more click costs one or two decoder calls, and any other sequence of clicks (an
undo, another box) is replayed from the box.

Model input: ``model_input`` (a ``ModelInput``: modality and window choice, default automatic)
is resolved once per volume into an ``InputTransform`` (see ``engine.intensity``) that maps each
slice to uint8 when it is encoded; the transform's description is part of every cache key, so
switching the input and back reuses the embeddings made before, and each ``Prediction`` carries
it for the slice's provenance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from medsam_gui.engine import correction, refine
from medsam_gui.engine.backends import Backend
from medsam_gui.engine.cache import CacheKey, EmbeddingCache, make_key
from medsam_gui.engine.intensity import InputTransform, ModelInput, resolve


@dataclass
class Prediction:
    mask: np.ndarray  # bool, display slice shape
    iou: float
    axis: str
    index: int
    box: Optional[Tuple[float, float, float, float]]
    points: List[Tuple[float, float, int]] = field(default_factory=list)
    model_input: Dict[str, object] = field(default_factory=dict)  # InputTransform.provenance()


def outward_order(center: int, n: int) -> List[int]:
    """center, center+1, center-1, center+2, center-2, ... clipped to 0..n-1."""
    order = [center] if 0 <= center < n else []
    for d in range(1, n):
        for i in (center + d, center - d):
            if 0 <= i < n:
                order.append(i)
    return order


class Session:
    def __init__(self, volume, backend: Backend, cache: Optional[EmbeddingCache] = None,
                 model_input: Optional[ModelInput] = None) -> None:
        self.volume = volume
        self.backend = backend
        self.cache = cache if cache is not None else EmbeddingCache()
        self._choice = model_input or ModelInput()
        self._transform: Optional[InputTransform] = None
        self._input_lock = threading.Lock()
        self._encode_lock = threading.RLock()
        self._hot: Tuple[Optional[CacheKey], Optional[torch.Tensor]] = (None, None)
        self.click_method = refine.DEFAULT_METHOD
        self._clicks: Dict[CacheKey, refine.RefineState] = {}  # last clicked slices' states
        self._clicks_lock = threading.Lock()

    # ------------------------------------------------------------------------ inputs
    def set_backend(self, backend: Backend) -> None:
        with self._encode_lock:
            self.backend = backend
            self._hot = (None, None)
        with self._clicks_lock:
            self._clicks.clear()  # a decoder-only fine-tune keeps the embeddings' keys

    @property
    def model_input(self) -> ModelInput:
        return self._choice

    def set_model_input(self, choice: ModelInput) -> InputTransform:
        """Switch what the model sees. Resolved at once: on ``ModelInputError`` (e.g. a window
        no voxel reaches) nothing changes. Embeddings of the previous input stay cached."""
        return self.use_transform(resolve(self.volume, choice), choice)

    def use_transform(self, transform: InputTransform,
                      choice: Optional[ModelInput] = None) -> InputTransform:
        """Use an already resolved input (``set_model_input`` does; comparisons with rules the
        app does not offer, such as ``intensity.upstream_transform``, do too)."""
        with self._input_lock:
            self._choice, self._transform = choice or self._choice, transform
            self._hot = (None, None)
        return transform

    def input_transform(self) -> InputTransform:
        """The resolved model input of this volume (computed once; raises ModelInputError)."""
        if self._transform is None:
            with self._input_lock:
                if self._transform is None:
                    self._transform = resolve(self.volume, self._choice)
        return self._transform

    def normalised(self) -> np.ndarray:
        """The whole volume as the model sees it (uint8; a new array on each call)."""
        return self.input_transform().apply(self.volume.data)

    def model_slice(self, axis: str, index: int,
                    transform: Optional[InputTransform] = None) -> np.ndarray:
        """Slice ``index`` of ``axis`` as the model sees it (uint8, display orientation)."""
        transform = transform or self.input_transform()
        return np.ascontiguousarray(transform.apply(self.volume.slice(axis, index)))

    def key(self, axis: str, index: int, transform: Optional[InputTransform] = None) -> CacheKey:
        transform = transform or self.input_transform()
        return make_key(self.backend.cache_tag, self.volume.content_hash, transform.cache_key,
                        axis, index)

    # ----------------------------------------------------------------------- embeddings
    def is_cached(self, axis: str, index: int) -> bool:
        return self.key(axis, index) in self.cache

    def cached_indices(self, axis: str) -> Set[int]:
        tag, vh = self.backend.cache_tag, self.volume.content_hash
        norm = self.input_transform().cache_key
        found = {k[4] for k in self.cache.keys()
                 if k[0] == tag and k[1] == vh and k[2] == norm and k[3] == axis}
        if self.cache.disk_dir is not None:
            n = self.volume.n_slices(axis)
            found |= {i for i in range(n) if i not in found and self.is_cached(axis, i)}
        return found

    def embed(self, axis: str, index: int,
              transform: Optional[InputTransform] = None) -> torch.Tensor:
        """(1, C, h, w) float32 embedding on the backend's device (cached, else encoded) of
        the slice under ``transform`` (default: the current model input)."""
        transform = transform or self.input_transform()
        key = self.key(axis, index, transform)
        hot_key, hot = self._hot
        if hot_key == key and hot is not None:
            return hot
        stored = self._cached(key)
        if stored is None:
            key, stored = self._encode(axis, index, transform)
        emb = stored.to(self.backend.device, torch.float32)
        self._hot = (key, emb)
        return emb

    def _cached(self, key: CacheKey) -> Optional[torch.Tensor]:
        """The stored embedding of ``key``; on a miss, one that the disk tier holds under the
        volume's legacy content hash (saved before hash scheme 2) is taken over under ``key``,
        when that hash is cheap to know (``Volume.legacy_hash_cheap``)."""
        stored = self.cache.get(key)
        if (stored is None and self.cache.disk_dir is not None
                and getattr(self.volume, "legacy_hash_cheap", False)):
            old = (key[0], self.volume.legacy_content_hash) + tuple(key[2:])
            if old in self.cache:
                stored = self.cache.get(old)  # type: ignore[arg-type]
                if stored is not None:
                    stored = self.cache.put(key, stored)
        return stored

    def _encode(self, axis: str, index: int, transform: Optional[InputTransform] = None,
                background: bool = False) -> Tuple[CacheKey, torch.Tensor]:
        """Key and image come from one transform (default: the input current once the lock is
        held), so a model-input switch never files an embedding under the wrong key.
        ``background``: a precompute's slice (``Backend.encode``)."""
        n = self.volume.n_slices(axis)
        if not 0 <= int(index) < n:
            raise IndexError(f"{axis} slice {index} outside 0..{n - 1}")
        with self._encode_lock:
            transform = transform or self.input_transform()
            key = self.key(axis, index, transform)
            stored = self._cached(key)  # another thread may have encoded it meanwhile
            if stored is None:
                # a backend without a background variant encodes as usual
                encode = getattr(self.backend, "encode_background", None) if background else None
                emb = (encode or self.backend.encode)([self.model_slice(axis, index, transform)])
                stored = self.cache.put(key, emb)
        return key, stored

    # ------------------------------------------------------------------------- predict
    def predict(self, axis: str, index: int, box: Optional[Sequence[float]],
                points: Optional[Sequence[Tuple[float, float, int]]] = None,
                previous_mask: Optional[np.ndarray] = None) -> Prediction:
        """Mask for ``box`` (x0, y0, x1, y1 display pixels) and optional points (x, y, 1|0);
        ``previous_mask``: the unreviewed fill on that slice the box corrects (see above)."""
        transform = self.input_transform()
        emb = self.embed(axis, index, transform)
        shape = self.volume.geometry(axis).slice_shape
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        pts = [(float(x), float(y), int(lab)) for x, y, lab in (points or [])]
        if previous_mask is not None and not pts and box is not None:
            state = refine.start(self.backend, emb, shape, box)
            state.mask, state.iou = correction.combine(previous_mask, box, state.mask, state.iou)
            state.method = self.click_method  # the next click goes on from the correction
            self._keep_state(self.key(axis, index, transform), state)
            mask, iou = state.mask, state.iou
        elif pts and box is not None:
            state = self._refined(self.key(axis, index, transform), emb, shape, box, pts)
            mask, iou = state.mask, state.iou
        else:
            mask, iou = self.backend.decode(emb, shape, box, points)
            if box is not None:  # a new box: clicks on it start from its own mask
                with self._clicks_lock:
                    self._clicks.pop(self.key(axis, index, transform), None)
        return Prediction(mask, iou, axis, int(index), box, pts,  # type: ignore[arg-type]
                          transform.provenance())

    def _refined(self, key: CacheKey, emb: torch.Tensor, shape, box, clicks
                 ) -> refine.RefineState:
        """The box refined by ``clicks``: from the kept state of this slice when it is the
        same box, method and a prefix of the clicks, else replayed from the box."""
        method = self.click_method
        with self._clicks_lock:
            state = self._clicks.get(key)
        if (state is None or state.box != tuple(box) or state.method != method
                or state.clicks != clicks[:len(state.clicks)]):
            state = refine.start(self.backend, emb, shape, tuple(box))
        for c in clicks[len(state.clicks):]:
            state = refine.step(self.backend, emb, shape, state, c, method)
        self._keep_state(key, state)
        return state

    def _keep_state(self, key: CacheKey, state: refine.RefineState) -> None:
        with self._clicks_lock:
            self._clicks.pop(key, None)
            self._clicks[key] = state
            while len(self._clicks) > 8:  # a few recently clicked slices
                self._clicks.pop(next(iter(self._clicks)))

    # ----------------------------------------------------------------------- precompute
    def precompute(self, axis: str, center: int,
                   progress: Optional[Callable[[int, int], None]] = None,
                   cancel: Optional[Callable[[], bool]] = None,
                   indices: Optional[List[int]] = None) -> int:
        """Encode ``center`` first, then outward; returns how many slices were encoded.

        ``indices`` restricts the set (still visited centre-out). Cancel is checked between
        slices; each slice holds the encoder lock only while it is encoded. Slices are encoded
        as background work (``Backend.encode``): a slice does not start while a box decodes.
        """
        n = self.volume.n_slices(axis)
        order = outward_order(int(center), n)
        if indices is not None:
            wanted = set(int(i) for i in indices)
            order = [i for i in order if i in wanted]
        todo = [i for i in order if not self.is_cached(axis, i)]
        total, done = len(todo), 0
        if progress:
            progress(0, total)
        for i in todo:
            if cancel is not None and cancel():
                break
            if not self.cache.in_memory(self.key(axis, i)):
                self._encode(axis, i, background=True)
            done += 1
            if progress:
                progress(done, total)
        return done

    # ------------------------------------------------------------------------ 3D helper
    def propagate(self, axis: str, index: int, mask: np.ndarray, direction: int = 1,
                  stop: Optional[Callable[[], bool]] = None, max_slices: Optional[int] = None,
                  margin: float = 3.0) -> Iterator:
        """Upstream's 3D inference in one direction: ``engine.propagation.propagate`` with only
        the empty-mask stop (no brakes), at most ``max_slices`` slices; yields its ``Step``s
        (``.index``, ``.mask``). The app uses ``engine.propagation`` with its stop rules."""
        import math

        from medsam_gui.engine import propagation

        if direction not in (1, -1):
            raise ValueError("direction must be +1 or -1")
        end = None if max_slices is None else index + direction * int(max_slices)
        extent = None if end is None else (min(index, end), max(index, end))
        rules = propagation.StopRules(0.0, math.inf, math.inf, 1, margin, extent)
        for event in propagation.propagate(self, axis, index, [mask], rules, cancel=stop,
                                           directions=(direction,)):
            if isinstance(event, propagation.Step):
                yield event
