"""The geometry RT Structure Sets share between writing and reading: an image's plane (pixel
row/column to patient LPS mm and back), a mask's contours (marching squares at 0.5, holes
included) and their even-odd fill, and how far a contour may lie from its image's plane."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from pydicom.dataset import Dataset
from skimage import draw, measure

from .dicom_source import SourceInstances


@dataclass(frozen=True)
class Plane:
    origin: np.ndarray  # ImagePositionPatient
    col_dir: np.ndarray  # direction of increasing column index (IOP[:3])
    row_dir: np.ndarray  # direction of increasing row index (IOP[3:])
    spacing: Tuple[float, float]  # (between rows, between columns)

    @classmethod
    def of(cls, ds: Dataset) -> "Plane":
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ps = [float(v) for v in ds.PixelSpacing]
        return cls(np.array([float(v) for v in ds.ImagePositionPatient]), iop[:3], iop[3:],
                   (ps[0], ps[1]))

    def to_patient(self, rc: np.ndarray) -> np.ndarray:
        """(n, 2) row/col pixel coordinates -> (n, 3) LPS mm."""
        return (self.origin + np.outer(rc[:, 1] * self.spacing[1], self.col_dir)
                + np.outer(rc[:, 0] * self.spacing[0], self.row_dir))

    def to_pixels(self, xyz: np.ndarray) -> Tuple[np.ndarray, float]:
        """(n, 3) LPS mm -> (n, 2) row/col, and the largest distance from the plane (mm)."""
        d = xyz - self.origin
        normal = np.cross(self.col_dir, self.row_dir)
        rc = np.stack([d @ self.row_dir / self.spacing[0], d @ self.col_dir / self.spacing[1]], 1)
        return rc, float(np.abs(d @ normal).max()) if len(d) else 0.0


def mask_contours(mask: np.ndarray) -> List[np.ndarray]:
    """Closed contours (row, col) around the True pixels of a 2D mask, holes included."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return []
    r0, c0 = int(rows[0]), int(cols[0])
    crop = mask[r0:int(rows[-1]) + 1, c0:int(cols[-1]) + 1]
    padded = np.pad(np.asarray(crop, dtype=np.uint8), 1)
    out = []
    for c in measure.find_contours(padded, 0.5):
        c = c[:-1] - 1.0 + (r0, c0)  # closed: last point repeats the first; undo crop, padding
        if len(c) >= 3:
            out.append(_drop_collinear(c))
    return out


def _drop_collinear(c: np.ndarray) -> np.ndarray:
    """The same polygon without vertices in the middle of straight runs (exact, no tolerance)."""
    before = c - np.roll(c, 1, axis=0)
    after = np.roll(c, -1, axis=0) - c
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = np.abs(cross) > 1e-9
    return c[keep] if keep.sum() >= 3 else c


def rasterise(contours: List[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """Even-odd fill of (row, col) polygons: pixels whose centre lies inside."""
    out = np.zeros(shape, dtype=bool)
    for c in contours:
        lo = np.clip(np.floor(c.min(axis=0)).astype(int), 0, None)
        hi = np.minimum(np.ceil(c.max(axis=0)).astype(int) + 1, shape)
        if (hi <= lo).any():
            continue
        rr, cc = draw.polygon(c[:, 0] - lo[0], c[:, 1] - lo[1], tuple(hi - lo))
        out[rr + lo[0], cc + lo[1]] ^= True
    return out


def depths(planes: List[Plane]) -> np.ndarray:
    normal = np.cross(planes[0].col_dir, planes[0].row_dir)
    return np.array([p.origin @ normal for p in planes])


def plane_tolerance(instances: SourceInstances) -> float:
    """How far (mm) a contour may lie from the plane of the image it references.

    Half the spacing between neighbouring image planes: farther than that, the contour is
    nearer another image's plane than its own, so its reference and its coordinates disagree
    and drawing it on the referenced image would put it on the wrong slice. (Half the slice
    thickness would be looser where slices overlap, e.g. 3 mm slices every 2 mm on the test
    CT.) A single image falls back to half its SliceThickness, else 1 mm."""
    planes = [Plane.of(s) for s in instances.datasets]
    if len(planes) > 1:
        step = float(np.median(np.abs(np.diff(depths(planes)))))
        if step > 0:
            return step / 2
    try:
        thickness = float(instances.datasets[0].SliceThickness)
    except (AttributeError, TypeError, ValueError):
        thickness = 0.0
    return thickness / 2 if np.isfinite(thickness) and thickness > 0 else 1.0
