"""EmbeddingCache: image embeddings by (model, volume content, normalisation, axis, slice).

Memory tier: a bytes-bounded LRU of fp16 CPU tensors (fp16 storage was measured to keep
masks at Dice >= 0.99 against fp32 storage; see tests/test_engine_cache.py). Its bound,
``default_memory_bytes``, is one eighth of the machine's memory within 256 MiB..2 GiB (2 GiB,
1,024 LiteMedSAM slices, on a 16 GB workstation); ``$MEDSAM_GUI_CACHE_MEMORY_MB`` sets it, and
what falls out of memory is still on disk when the disk tier is on. Optional disk
tier: one ``.npy`` file per embedding under a folder (the user cache dir by default), written
atomically (temp file + rename), capped in total size (oldest files removed first).

Each disk entry ends with a checksum trailer (``TRAILER_MAGIC`` + blake2b-256 of every byte
before it, i.e. the ``.npy`` header and the array data), which ``np.load`` ignores. A disk
entry is trusted only when its checksum matches: a file whose array bytes were overwritten
(with zeros, say) still parses as an array of the right shape and would give a wrong mask (on a BRATS FLAIR
slice a zeroed embedding turned the tumour box's 1,979-pixel mask into a 1,669-pixel one). Entries that are
truncated, altered, unreadable or written without a trailer are deleted with a warning and
reported as missing, so the caller recomputes them. All methods are thread-safe.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

CacheKey = Tuple[str, str, str, str, int]  # (backend tag, volume hash, norm, axis, index)
TRAILER_MAGIC = b"MSGB2B1\n"  # then 32 bytes: blake2b of everything before the trailer
TRAILER_SIZE = len(TRAILER_MAGIC) + 32
log = logging.getLogger(__name__)
STALE_TEMP_SECONDS = 3600  # older temp files are no write in progress
MEMORY_ENV = "MEDSAM_GUI_CACHE_MEMORY_MB"  # the memory tier's bound, in MiB
MEMORY_SHARE = 8  # by default the memory tier takes at most 1/8 of the machine's memory
MEMORY_MIN, MEMORY_MAX = 256 << 20, 2 << 30


def physical_memory() -> int:
    """The machine's memory in bytes (0 if the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def default_memory_bytes() -> int:
    """The memory tier's bound: ``$MEDSAM_GUI_CACHE_MEMORY_MB`` if set, else 1/8 of the
    machine's memory within 256 MiB..2 GiB (2 GiB on a 16 GB workstation)."""
    env = os.environ.get(MEMORY_ENV, "").strip()
    if env:
        try:
            return max(0, int(float(env) * (1 << 20)))
        except ValueError:
            log.warning("%s=%r is not a number of MiB; using the default", MEMORY_ENV, env)
    physical = physical_memory() or 16 << 30
    return int(min(MEMORY_MAX, max(MEMORY_MIN, physical // MEMORY_SHARE)))


def _checksum(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=32).digest()


def encode_entry(arr: np.ndarray) -> bytes:
    """An embedding as ``.npy`` bytes followed by the checksum trailer."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    body = buf.getvalue()
    return body + TRAILER_MAGIC + _checksum(body)


def decode_entry(data: bytes) -> np.ndarray:
    """The array of a disk entry; ValueError (saying why) unless its checksum matches and it
    holds a finite (1, C, h, w) float16 embedding."""
    if len(data) < TRAILER_SIZE or data[-TRAILER_SIZE:-32] != TRAILER_MAGIC:
        raise ValueError("no checksum trailer (truncated, overwritten or from an older version)")
    body = data[:-TRAILER_SIZE]
    if _checksum(body) != data[-32:]:
        raise ValueError("checksum mismatch (the file was altered)")
    arr = np.load(io.BytesIO(body), allow_pickle=False)
    if arr.ndim != 4 or arr.dtype != np.float16 or not np.isfinite(arr).all():
        raise ValueError(f"not a finite 4D float16 embedding ({arr.dtype}, {arr.shape})")
    return arr


def make_key(backend_tag: str, volume_hash: str, norm_params: Union[Dict, str], axis: str,
             index: int) -> CacheKey:
    """Key naming the weights+precision, the voxels, the input normalisation, axis and slice."""
    norm = norm_params if isinstance(norm_params, str) else json.dumps(norm_params, sort_keys=True)
    return (backend_tag, volume_hash, norm, axis, int(index))


def default_disk_dir() -> str:
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("medsam-gui"), "embeddings")


class EmbeddingCache:
    """Thread-safe two-tier cache of (1, C, h, w) embeddings."""

    def __init__(self, max_bytes: Optional[int] = None, disk_dir: Optional[str] = None,
                 disk_max_bytes: int = 8 << 30, dtype: torch.dtype = torch.float16) -> None:
        self.max_bytes = int(default_memory_bytes() if max_bytes is None else max_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self.disk_max_bytes = int(disk_max_bytes)
        self.dtype = dtype
        self._mem: "OrderedDict[CacheKey, torch.Tensor]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self.hits = self.misses = self.disk_hits = 0
        self.disk_rejected = 0  # disk entries dropped as damaged (then recomputed by the caller)
        if self.disk_dir:
            self.disk_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def with_user_disk_cache(cls, max_bytes: Optional[int] = None,
                             disk_max_bytes: int = 8 << 30) -> "EmbeddingCache":
        return cls(max_bytes, default_disk_dir(), disk_max_bytes)

    # ------------------------------------------------------------------------- memory
    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: CacheKey) -> bool:
        with self._lock:
            if key in self._mem:
                return True
        path = self._disk_path(key)
        return path is not None and path.exists()

    def in_memory(self, key: CacheKey) -> bool:
        with self._lock:
            return key in self._mem

    def keys(self):
        with self._lock:
            return list(self._mem.keys())

    def get(self, key: CacheKey) -> Optional[torch.Tensor]:
        """The stored tensor (storage dtype, CPU) or None; refreshes its LRU position."""
        with self._lock:
            t = self._mem.get(key)
            if t is not None:
                self._mem.move_to_end(key)
                self.hits += 1
                return t
        t = self._disk_get(key)
        with self._lock:
            if t is None:
                self.misses += 1
                return None
            self.disk_hits += 1
            self._put_mem(key, t)
        return t

    def put(self, key: CacheKey, embedding: torch.Tensor) -> torch.Tensor:
        """Store a copy in the storage dtype on the CPU; returns the stored tensor."""
        t = embedding.detach().to("cpu", self.dtype).contiguous()
        if t.dim() == 3:
            t = t[None]
        with self._lock:
            self._put_mem(key, t)
        self._disk_put(key, t)
        return t

    def _put_mem(self, key: CacheKey, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        old = self._mem.pop(key, None)
        if old is not None:
            self._bytes -= old.numel() * old.element_size()
        if size > self.max_bytes:
            return
        self._mem[key] = t
        self._bytes += size
        while self._bytes > self.max_bytes and self._mem:
            _, dropped = self._mem.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()
            self._bytes = 0

    # --------------------------------------------------------------------------- disk
    def _disk_path(self, key: CacheKey) -> Optional[Path]:
        if self.disk_dir is None:
            return None
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        return self.disk_dir / digest[:2] / f"{digest}.npy"

    def _disk_get(self, key: CacheKey) -> Optional[torch.Tensor]:
        path = self._disk_path(key)
        if path is None or not path.exists():
            return None
        try:
            arr = decode_entry(path.read_bytes())
        except (OSError, ValueError, EOFError) as exc:  # damaged: drop it, the caller recomputes
            log.warning("embedding cache entry %s dropped, it will be recomputed: %s", path, exc)
            with self._lock:
                self.disk_rejected += 1
            try:
                path.unlink()
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # recently used: survives the size cap longer
        except OSError:
            pass
        return torch.from_numpy(arr).to(self.dtype)

    def _disk_put(self, key: CacheKey, t: torch.Tensor) -> None:
        path = self._disk_path(key)
        if path is None:
            return
        data = encode_entry(t.to(torch.float16).numpy())
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # atomic: a reader sees the old entry or the whole new one
            self._enforce_disk_cap()
        except OSError as exc:  # a full or read-only disk only costs a recomputation later
            log.warning("embedding not cached on disk (%s): %s", path, exc)
            try:
                tmp.unlink()
            except OSError:
                pass

    def _enforce_disk_cap(self) -> None:
        assert self.disk_dir is not None
        files = []
        for p in self.disk_dir.glob("*/*.npy"):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(f[1] for f in files)
        stale = time.time() - STALE_TEMP_SECONDS
        for p in self.disk_dir.glob("*/*.npy.tmp-*"):  # left by a process that died mid-write
            try:
                if p.stat().st_mtime < stale:
                    p.unlink()
            except OSError:
                pass
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total <= self.disk_max_bytes:
                break
            try:
                p.unlink()
                total -= size
            except OSError:
                pass
