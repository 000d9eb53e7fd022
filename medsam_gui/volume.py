"""Volume: voxels exactly as loaded, their affine, and 2D slices in display orientation.

Voxels are never resampled or rescaled here. Each view (axial, coronal, sagittal) is a
``ViewGeometry``: which voxel axis is constant on a slice, which voxel axes run down and across
the screen, and whether each is flipped. Slices are numpy *views* of the source array, so the
same geometry reads image slices and writes label slices on the source grid.

Display conventions (radiological, as in most clinical viewers):

- axial: patient right on screen left, anterior up;
- coronal: patient right on screen left, superior up;
- sagittal: anterior on screen left, superior up.

The slice index of a view is the plain voxel index along its ``slice_axis``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import nibabel as nib
import numpy as np

VIEWS: Tuple[str, ...] = ("axial", "coronal", "sagittal")

# For each view: (world axis normal to the slice, world axis down the screen, world axis across).
# World axes are RAS: 0 = R/L, 1 = A/P, 2 = S/I.
_VIEW_WORLD_AXES = {
    "axial": (2, 1, 0),
    "coronal": (1, 2, 0),
    "sagittal": (0, 2, 1),
}
# Letters at the screen edges: (top, bottom, left, right).
_VIEW_LETTERS = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}


@dataclass(frozen=True)
class ViewGeometry:
    """How one view's 2D slices map onto the 3D source array."""

    view: str
    slice_axis: int
    row_axis: int
    row_flip: bool
    col_axis: int
    col_flip: bool
    shape3d: Tuple[int, int, int]

    @property
    def n_slices(self) -> int:
        return self.shape3d[self.slice_axis]

    @property
    def slice_shape(self) -> Tuple[int, int]:
        """(rows, cols) of a displayed slice."""
        return self.shape3d[self.row_axis], self.shape3d[self.col_axis]

    def take(self, array3d: np.ndarray, index: int) -> np.ndarray:
        """Slice ``index`` of any array on the volume grid, as a writable view, rows × cols."""
        if not 0 <= index < self.n_slices:
            raise IndexError(f"{self.view} slice {index} outside 0..{self.n_slices - 1}")
        sl: List[object] = [slice(None)] * 3
        sl[self.slice_axis] = index
        plane = array3d[tuple(sl)]
        # remaining axes keep their order; put rows first
        remaining = [a for a in range(3) if a != self.slice_axis]
        if remaining.index(self.row_axis) != 0:
            plane = plane.T
        if self.row_flip:
            plane = plane[::-1, :]
        if self.col_flip:
            plane = plane[:, ::-1]
        return plane

    def voxel_index(self, index: int, row: int, col: int) -> Tuple[int, int, int]:
        """Source voxel (i, j, k) under display pixel (row, col) of slice ``index``."""
        n_rows, n_cols = self.slice_shape
        vox = [0, 0, 0]
        vox[self.slice_axis] = int(index)
        vox[self.row_axis] = n_rows - 1 - int(row) if self.row_flip else int(row)
        vox[self.col_axis] = n_cols - 1 - int(col) if self.col_flip else int(col)
        return vox[0], vox[1], vox[2]

    def display_pixel(self, voxel: Tuple[int, int, int]) -> Tuple[int, int, int]:
        """Inverse of ``voxel_index``: (slice index, row, col) showing source voxel ``voxel``."""
        n_rows, n_cols = self.slice_shape
        r, c = int(voxel[self.row_axis]), int(voxel[self.col_axis])
        return (
            int(voxel[self.slice_axis]),
            n_rows - 1 - r if self.row_flip else r,
            n_cols - 1 - c if self.col_flip else c,
        )

    @property
    def edge_letters(self) -> Tuple[str, str, str, str]:
        """Anatomical letters at the (top, bottom, left, right) screen edges."""
        return _VIEW_LETTERS[self.view]


def view_geometry(affine: np.ndarray, shape3d: Tuple[int, int, int], view: str) -> ViewGeometry:
    """Geometry of ``view`` for voxels with this affine (oblique scans use the closest axes)."""
    if view not in _VIEW_WORLD_AXES:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    ornt = nib.orientations.io_orientation(affine)  # per voxel axis: (world axis, +1/-1)
    world_to_voxel = {int(ornt[k, 0]): k for k in range(3)}
    normal, down, across = _VIEW_WORLD_AXES[view]
    row_axis, col_axis = world_to_voxel[down], world_to_voxel[across]
    # Screen rows go downwards and columns rightwards. Rows must run towards P (axial) or I
    # (coronal, sagittal); columns towards L (axial, coronal) or P (sagittal). RAS+ voxel axes
    # that increase towards R, A or S therefore run backwards on screen.
    return ViewGeometry(
        view=view,
        slice_axis=world_to_voxel[normal],
        row_axis=row_axis,
        row_flip=bool(ornt[row_axis, 1] > 0),
        col_axis=col_axis,
        col_flip=bool(ornt[col_axis, 1] > 0),
        shape3d=tuple(int(s) for s in shape3d),  # type: ignore[arg-type]
    )


def view_for_axis(affine: np.ndarray, shape3d: Tuple[int, int, int], axis: int) -> ViewGeometry:
    """The view whose slices are constant along source voxel ``axis`` (0, 1 or 2)."""
    for view in VIEWS:
        geom = view_geometry(affine, shape3d, view)
        if geom.slice_axis == axis:
            return geom
    raise ValueError(f"voxel axis {axis} is not 0, 1 or 2")


@dataclass
class SourceInfo:
    """Where a volume came from and what its header said that the core may need later."""

    path: str
    kind: str  # "nifti" or "dicom"
    series_uid: Optional[str] = None
    description: str = ""
    window_preset: Optional[Tuple[float, float]] = None  # (center, width) from DICOM
    warnings: List[str] = field(default_factory=list)
    nifti_header: Optional[object] = None  # nibabel header of a NIfTI source, kept for export
    extra: Dict[str, object] = field(default_factory=dict)
    # files the loader left out, each with the reason: (file path, reason). ``warnings`` names
    # them too; a slice position without an image is shown blank (``extra["missing_slices"]``)
    dropped_files: List[Tuple[str, str]] = field(default_factory=list)


# Content hash scheme 2: blake2b-128 of a tag, shape and dtype, the voxels in Fortran order (the
# order every loader gives them in: hashed where they lie, with no copy) and the affine.
HASH_SCHEME = 2
_HASH_TAG = b"medsam-gui content v2\n"
HASH_BLOCK_BYTES = 32 << 20  # arrays in another memory order are hashed in slabs this big
# a legacy hash (a transposing copy, in slabs) of at most this many voxel bytes is cheap enough
# (about 0.3 s) to compute when a cache lookup under the current hash misses
LEGACY_HASH_CHEAP_BYTES = 64 << 20


def _slab_length(shape: Tuple[int, ...], axis: int, itemsize: int) -> int:
    per = itemsize
    for a, n in enumerate(shape):
        if a != axis:
            per *= int(n)
    return max(1, HASH_BLOCK_BYTES // max(1, per))


def content_digest(data: np.ndarray, affine: np.ndarray) -> str:
    """Content hash (scheme 2) of a 3D array on its affine.

    The voxels are hashed in Fortran order with native byte order. An F-contiguous array (as
    loaded from NIfTI, DICOM and the other formats) is hashed in place, with no copy; any other
    layout (a C-ordered copy, a strided view) is copied to Fortran order one slab of
    ``HASH_BLOCK_BYTES`` at a time, so C- and F-ordered copies of a volume hash equal and the
    extra memory stays one slab. The file's path and name are not part of it."""
    native = data.dtype.newbyteorder("=")
    h = hashlib.blake2b(digest_size=16)
    h.update(_HASH_TAG)
    h.update(str((tuple(int(s) for s in data.shape), native.str)).encode())
    if data.dtype == native and data.flags.f_contiguous:
        if data.size:
            h.update(memoryview(data.T).cast("B"))
    else:
        step = _slab_length(data.shape, data.ndim - 1, data.dtype.itemsize)
        for k in range(0, data.shape[-1], step):
            slab = np.asfortranarray(data[..., k:k + step], dtype=native)
            if slab.size:
                h.update(memoryview(slab.T).cast("B"))
    h.update(np.round(np.asarray(affine, np.float64), 6).tobytes())
    return h.hexdigest()


def legacy_content_digest(data: np.ndarray, affine: np.ndarray) -> str:
    """The content hash before scheme 2 (the voxels in C order), for finding work and
    embeddings saved under it. Equal to the old ``blake2b(ascontiguousarray(data).tobytes())``
    formula, computed one C-ordered slab at a time instead of through a whole-volume copy."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((data.shape, str(data.dtype))).encode())
    if data.flags.c_contiguous:
        if data.size:
            h.update(memoryview(data).cast("B"))
    else:
        step = _slab_length(data.shape, 0, data.dtype.itemsize)
        for i in range(0, data.shape[0], step):
            slab = np.ascontiguousarray(data[i:i + step])
            if slab.size:
                h.update(memoryview(slab).cast("B"))
    h.update(np.round(affine, 6).tobytes())
    return h.hexdigest()


class Volume:
    """A 3D scan: voxels exactly as loaded plus the affine to RAS+ world millimetres."""

    def __init__(
        self,
        data: np.ndarray,
        affine: np.ndarray,
        modality: str = "OT",
        source: Optional[SourceInfo] = None,
    ):
        if data.ndim != 3:
            raise ValueError(f"a Volume is 3D, got shape {data.shape}")
        self.data = data
        self.affine = np.asarray(affine, dtype=np.float64)
        self.modality = modality.upper()
        self.source = source or SourceInfo(path="", kind="array")
        self._geometry: Dict[str, ViewGeometry] = {}
        self._content_hash: Optional[str] = None
        self._legacy_hash: Optional[str] = None

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Voxel size in mm along each source axis (column norms of the affine)."""
        z = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(z[0]), float(z[1]), float(z[2])

    @property
    def axcodes(self) -> Tuple[str, str, str]:
        return nib.aff2axcodes(self.affine)

    @property
    def content_hash(self) -> str:
        """Hash of the voxels, shape, dtype and affine: names this content in caches and
        workspaces (``content_digest``: the same for C- and F-ordered copies and file copies)."""
        if self._content_hash is None:
            self._content_hash = content_digest(self.data, self.affine)
        return self._content_hash

    @property
    def legacy_content_hash(self) -> str:
        """The content hash of versions before hash scheme 2 (``legacy_content_digest``):
        work and embeddings saved under it are still found. Computed on first use only."""
        if self._legacy_hash is None:
            self._legacy_hash = legacy_content_digest(self.data, self.affine)
        return self._legacy_hash

    @property
    def legacy_hash_known(self) -> bool:
        """Has ``legacy_content_hash`` been computed (so asking for it costs nothing)?"""
        return self._legacy_hash is not None

    @property
    def legacy_hash_cheap(self) -> bool:
        """Is the legacy hash cheap enough to compute on a mere cache miss?"""
        return self.legacy_hash_known or self.data.nbytes <= LEGACY_HASH_CHEAP_BYTES

    def known_content_hashes(self) -> List[str]:
        """The content hash, then the legacy one if it has been computed."""
        return [self.content_hash] + ([self._legacy_hash] if self._legacy_hash else [])

    def geometry(self, view: str) -> ViewGeometry:
        if view not in self._geometry:
            self._geometry[view] = view_geometry(self.affine, self.shape, view)
        return self._geometry[view]

    def n_slices(self, view: str) -> int:
        return self.geometry(view).n_slices

    def slice(self, view: str, index: int) -> np.ndarray:
        """The 2D slice ``index`` of ``view`` in display orientation (a view, not a copy)."""
        return self.geometry(view).take(self.data, index)

    def voxel_index(self, view: str, index: int, row: int, col: int) -> Tuple[int, int, int]:
        return self.geometry(view).voxel_index(index, row, col)

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, dtype={self.data.dtype}, modality={self.modality}, "
            f"axcodes={''.join(self.axcodes)}, spacing={tuple(round(s, 3) for s in self.spacing)}, "
            f"source={self.source.path!r})"
        )
